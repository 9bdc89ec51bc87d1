-- Signing keys. Exactly one is active (retired_at IS NULL): the partial unique index makes a
-- second active key impossible even if two instances start at once.
CREATE TABLE signing_keys (
    kid text PRIMARY KEY,
    alg text NOT NULL CHECK (alg IN ('RS256', 'ES256')),
    private_key_pem text NOT NULL,
    public_jwk jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    retired_at timestamptz
);

CREATE UNIQUE INDEX signing_keys_one_active_idx ON signing_keys ((true)) WHERE retired_at IS NULL;

-- Passwords of users (the username is the user's id in the users service), scrypt hashes.
CREATE TABLE user_credentials (
    username text PRIMARY KEY,
    password_hash text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Machine clients (client_credentials, introspection callers) and the roles their internal
-- tokens carry.
CREATE TABLE clients (
    client_id text PRIMARY KEY,
    secret_hash text NOT NULL,
    roles text[] NOT NULL DEFAULT '{}',
    updated_at timestamptz NOT NULL DEFAULT now()
);
