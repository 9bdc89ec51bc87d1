-- Held-back events (services.common.messaging.outbox, "Held back"): the relay leaves a row
-- until not_before; its use case may withdraw or release it by topic and key before that.
ALTER TABLE outbox ADD COLUMN not_before timestamptz;

CREATE INDEX outbox_held_back_idx ON outbox (topic, key)
    WHERE published_at IS NULL AND not_before IS NOT NULL;
