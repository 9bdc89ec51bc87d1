-- One row per delivered event: the id is the source event's id, so a redelivered event
-- conflicts with its first copy and is stored once.
CREATE TABLE notifications (
    id uuid PRIMARY KEY,
    user_id text NOT NULL,
    type text NOT NULL,
    subject text,
    data jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Serves GET /notifications (one user's, newest first, keyset pages by (created_at, id)).
CREATE INDEX notifications_user_id_created_at_idx
    ON notifications (user_id, created_at DESC, id DESC);
