-- The payment that settled the order, and why it is in its status (decline reason, fallback).
ALTER TABLE orders
    ADD COLUMN payment_id text,
    ADD COLUMN status_reason text,
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
