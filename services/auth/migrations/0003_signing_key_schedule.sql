-- Signing keys are published before they sign (services/auth/README.md#signing-keys-and-rotation):
-- each key has the time it starts signing, `active_from`, or NULL while it is the next key,
-- published and not yet scheduled. The key signing at a time is the one with the latest
-- active_from at or before it; a key retires when the next scheduled key starts. Keys made
-- before this migration signed from their creation on, and each retired when the next was
-- made (one rotation's `now`), so created_at is their active_from.
ALTER TABLE signing_keys ADD COLUMN active_from timestamptz;
UPDATE signing_keys SET active_from = created_at;
DROP INDEX signing_keys_one_active_idx;
ALTER TABLE signing_keys DROP COLUMN retired_at;

-- At most one next key, even if two instances start or rotate at once.
CREATE UNIQUE INDEX signing_keys_one_next_idx ON signing_keys ((true)) WHERE active_from IS NULL;
