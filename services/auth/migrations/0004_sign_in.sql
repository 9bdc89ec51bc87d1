-- Signing in a browser (services/auth/sign_in.py): auth sessions, pending authorization
-- requests, authorization codes and refresh-token families. Every secret a browser or client
-- holds (session id, request id, browser binding, code, refresh token) is stored only as its
-- SHA-256, hex.
CREATE TABLE auth_sessions (
    id_hash text PRIMARY KEY,
    user_id text NOT NULL,
    auth_time timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);

CREATE TABLE authorization_requests (
    id_hash text PRIMARY KEY,
    browser_hash text NOT NULL,
    client_id text NOT NULL,
    redirect_uri text NOT NULL,
    scope text[] NOT NULL,
    state text NOT NULL,
    nonce text NOT NULL,
    code_challenge text NOT NULL,
    prompt text,
    expires_at timestamptz NOT NULL
);

-- What one sign-in granted a client; its codes and refresh tokens are revoked together.
CREATE TABLE refresh_families (
    family_id uuid PRIMARY KEY,
    client_id text NOT NULL,
    user_id text NOT NULL,
    scope text[] NOT NULL,
    auth_time timestamptz NOT NULL,
    session_hash text NOT NULL,
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz
);

CREATE INDEX refresh_families_session_idx ON refresh_families (session_hash);

CREATE TABLE authorization_codes (
    code_hash text PRIMARY KEY,
    family_id uuid NOT NULL REFERENCES refresh_families ON DELETE CASCADE,
    redirect_uri text NOT NULL,
    code_challenge text NOT NULL,
    nonce text NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at timestamptz
);

CREATE TABLE refresh_tokens (
    token_hash text PRIMARY KEY,
    family_id uuid NOT NULL REFERENCES refresh_families ON DELETE CASCADE,
    expires_at timestamptz NOT NULL,
    used_at timestamptz
);

CREATE INDEX authorization_codes_family_idx ON authorization_codes (family_id);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
