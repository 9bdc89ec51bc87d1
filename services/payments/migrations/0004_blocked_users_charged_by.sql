-- Users blocked (from user-events): their new payments are refused.
CREATE TABLE blocked_users (
    user_id text PRIMARY KEY,
    blocked_at timestamptz NOT NULL DEFAULT now()
);

-- The instance (payments-1, payments-worker-2, ...) that recorded the payment's outcome.
ALTER TABLE payments ADD COLUMN charged_by text;
