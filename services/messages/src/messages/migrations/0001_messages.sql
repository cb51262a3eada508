-- Messages on posts. Ids are UUIDv7: ordering by id is ordering by time, so
-- a post's messages page by a keyset scan of (post_id, id).
CREATE TABLE messages (
    id uuid PRIMARY KEY,
    post_id uuid NOT NULL,
    sender_id uuid NOT NULL,
    body text NOT NULL CHECK (length(body) BETWEEN 1 AND 2000),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_by_post ON messages (post_id, id);
