-- The brute-force limit on the password grant (services/auth/login_limits.py): per username
-- (scope 'user') and per client address (scope 'address'), the attempts counted in the key's
-- current window, which started at `window_start`. Shared by every auth instance.
CREATE TABLE login_attempts (
    scope text NOT NULL CHECK (scope IN ('user', 'address')),
    key text NOT NULL,
    window_start timestamptz NOT NULL,
    attempts integer NOT NULL CHECK (attempts >= 0),
    PRIMARY KEY (scope, key)
);

CREATE INDEX login_attempts_window_start_idx ON login_attempts (window_start);
