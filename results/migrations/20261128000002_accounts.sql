-- Accounts of the API and dashboard, and the tokens they log in with.
-- Passwords are argon2id PHC strings; tokens are stored as the SHA-256 (hex)
-- of the random token, never the token itself.

CREATE TABLE accounts (
    username VARCHAR(64) NOT NULL PRIMARY KEY,
    password_hash VARCHAR(255) NOT NULL,
    account_role VARCHAR(16) NOT NULL,
    customer_id BIGINT,
    created_at_ms BIGINT NOT NULL
);

-- kind: `session` (the dashboard's cookie) or `bearer` (API clients).
CREATE TABLE access_tokens (
    token_hash VARCHAR(64) NOT NULL PRIMARY KEY,
    username VARCHAR(64) NOT NULL,
    kind VARCHAR(16) NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
