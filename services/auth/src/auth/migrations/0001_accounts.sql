-- Accounts, signing keys, refresh tokens and the follow graph of the auth service.

CREATE TABLE users (
    id uuid PRIMARY KEY,
    username text NOT NULL CHECK (username ~ '^[a-z0-9_]{3,30}$'),
    email text NOT NULL,
    password_hash text NOT NULL,
    display_name text NOT NULL DEFAULT '',
    bio text NOT NULL DEFAULT '',
    is_admin boolean NOT NULL DEFAULT false,
    follower_count bigint NOT NULL DEFAULT 0 CHECK (follower_count >= 0),
    following_count bigint NOT NULL DEFAULT 0 CHECK (following_count >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_username_key ON users (lower(username));
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

-- ES256 keys. A key is published in the JWKS from creation, signs from
-- activates_at (once caches have seen it), and leaves the JWKS at retires_at
-- (once every token it signed has expired).
CREATE TABLE signing_keys (
    kid text PRIMARY KEY,
    private_jwk jsonb NOT NULL,
    public_jwk jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    activates_at timestamptz NOT NULL,
    retires_at timestamptz
);

-- A family is one login's chain of rotating refresh tokens; revoking it ends
-- the session on every token of the chain.
CREATE TABLE token_families (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    revoked_reason text
);
CREATE INDEX token_families_user ON token_families (user_id) WHERE revoked_at IS NULL;

-- Only a hash of each refresh token is kept: a read of this table gives no session.
CREATE TABLE refresh_tokens (
    token_hash bytea PRIMARY KEY,
    family_id uuid NOT NULL REFERENCES token_families (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    spent_at timestamptz
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

CREATE TABLE follows (
    follower_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    followee_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (follower_id, followee_id),
    CHECK (follower_id <> followee_id)
);
-- Pages of followers (newest first); the primary key serves "following" lookups.
CREATE INDEX follows_followers_page ON follows (followee_id, created_at DESC, follower_id DESC);
CREATE INDEX follows_following_page ON follows (follower_id, created_at DESC, followee_id DESC);
