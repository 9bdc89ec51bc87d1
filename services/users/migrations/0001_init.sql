CREATE TABLE users (
    id text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 64),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    email text NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    roles text[] NOT NULL DEFAULT '{user}',
    blocked boolean NOT NULL DEFAULT false,
    blocked_reason text,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- One account per email address, whatever its letter case.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

-- Serves ListUsers (keyset pagination by created_at, then id).
CREATE INDEX users_created_at_id_idx ON users (created_at, id);
