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

-- The messages message_count has heard of (from the messages service's
-- events): delivered at least once and in no set order across the two
-- streams, each is counted once, and a deletion heard before its creation
-- cancels it rather than counting it. Rows of live messages stay while
-- their post does; those of deleted ones go a week after (see the purge).
CREATE TABLE counted_messages (
    message_id uuid PRIMARY KEY,
    post_id uuid NOT NULL REFERENCES posts (id) ON DELETE CASCADE,
    deleted boolean NOT NULL,
    heard_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX counted_messages_post ON counted_messages (post_id);
CREATE INDEX counted_messages_deleted ON counted_messages (heard_at) WHERE deleted;
