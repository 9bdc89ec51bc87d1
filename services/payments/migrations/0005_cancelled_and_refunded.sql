-- CANCELLED: the order ended unpaid before any charge, and this row holds its order id so
-- nothing charges it later. REFUNDED: a charge given back because its order ended unpaid.
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('PENDING', 'SUCCEEDED', 'DECLINED', 'CANCELLED', 'REFUNDED'));
