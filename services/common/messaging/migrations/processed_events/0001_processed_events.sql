-- Events a consumer group has handled (services.common.messaging.consumer): written in the
-- same transaction as the handler's effect, so a redelivered event is skipped.
CREATE TABLE processed_events (
    consumer_group text NOT NULL,
    event_id uuid NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, event_id)
);

CREATE INDEX processed_events_processed_at_idx ON processed_events (processed_at);
