CREATE TABLE orders (
    id uuid PRIMARY KEY,
    user_id text NOT NULL,
    status text NOT NULL
        CHECK (status IN ('PENDING', 'PAID', 'PAYMENT_PENDING', 'FAILED', 'CANCELLED')),
    items jsonb NOT NULL,
    total_price bigint NOT NULL CHECK (total_price >= 0),
    currency text NOT NULL CHECK (length(currency) = 3),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Serves GET /orders?userId= (filter by user, oldest first).
CREATE INDEX orders_user_id_created_at_idx ON orders (user_id, created_at);

-- One row per Idempotency-Key. The key row is written before its order in the same
-- transaction, so the foreign key is checked at commit.
CREATE TABLE idempotency_keys (
    key text PRIMARY KEY,
    request_hash text NOT NULL,
    order_id uuid NOT NULL REFERENCES orders (id) DEFERRABLE INITIALLY DEFERRED,
    created_at timestamptz NOT NULL DEFAULT now()
);
