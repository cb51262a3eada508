-- Posts, their likes and counters. Ids are UUIDv7: ordering by id is ordering
-- by creation time, so every feed is a keyset scan of an index on id.
CREATE TABLE posts (
    id uuid PRIMARY KEY,
    author_id uuid NOT NULL,
    caption text NOT NULL,
    -- The media documents as the media service described them at posting
    -- (their URLs are immutable), so reading a post asks no one else.
    media jsonb NOT NULL,
    like_count bigint NOT NULL DEFAULT 0 CHECK (like_count >= 0),
    message_count bigint NOT NULL DEFAULT 0 CHECK (message_count >= 0),
    -- Bumped by every change; caches never replace a newer version with an older one.
    version bigint NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX posts_by_author ON posts (author_id, id DESC);

CREATE TABLE likes (
    post_id uuid NOT NULL REFERENCES posts (id) ON DELETE CASCADE,
    user_id uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, post_id)
);
CREATE INDEX likes_by_post ON likes (post_id);

-- Events from other services already applied to the counters: delivery is
-- at least once, and a redelivered message.created must not count twice.
CREATE TABLE applied_events (
    event_id uuid PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX applied_events_by_age ON applied_events (applied_at);
