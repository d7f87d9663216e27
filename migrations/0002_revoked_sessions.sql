-- Sessions ended by logout before their token expired. A token whose jti is listed here
-- is refused; rows are purged once the token would have expired anyway.
CREATE TABLE revoked_sessions (
    jti        text PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
CREATE INDEX revoked_sessions_by_expiry ON revoked_sessions (expires_at);
