CREATE TABLE payments (
    id uuid PRIMARY KEY,
    -- The idempotency key: at most one payment per order.
    order_id text NOT NULL UNIQUE CHECK (length(order_id) BETWEEN 1 AND 64),
    user_id text NOT NULL CHECK (length(user_id) BETWEEN 1 AND 64),
    amount bigint NOT NULL CHECK (amount > 0),
    currency text NOT NULL CHECK (length(currency) = 3),
    status text NOT NULL CHECK (status IN ('PENDING', 'SUCCEEDED', 'DECLINED')),
    decline_reason text CHECK ((status = 'DECLINED') = (decline_reason IS NOT NULL)),
    -- While PENDING: until when the caller that claimed the payment may finish it; after
    -- that another caller may take it over (the first one crashed or stalled).
    processing_until timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'PENDING') = (processing_until IS NOT NULL))
);

-- Serves ListPayments (per user, keyset pagination by created_at, then id).
CREATE INDEX payments_user_id_created_at_id_idx ON payments (user_id, created_at, id);
