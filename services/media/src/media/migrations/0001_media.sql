-- Uploaded images and their renditions (the objects live in the S3 bucket).
--
-- A row is written in state 'processing' before any object is stored, and
-- turns 'pending' once every object is: a failure on either side leaves a
-- 'processing' row naming what to clean, which the sweeper removes.
CREATE TABLE media (
    id uuid PRIMARY KEY,
    owner_id uuid NOT NULL,
    state text NOT NULL CHECK (state IN ('processing', 'pending', 'attached')),
    post_id uuid,
    source_type text NOT NULL,
    width integer NOT NULL,
    height integer NOT NULL,
    blurhash text NOT NULL,
    description text NOT NULL DEFAULT '',
    -- [{name, width, height, key, content_type}], the original first.
    renditions jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((state = 'attached') = (post_id IS NOT NULL))
);
CREATE INDEX media_owner ON media (owner_id, created_at DESC);
CREATE INDEX media_post ON media (post_id) WHERE post_id IS NOT NULL;
CREATE INDEX media_unattached ON media (created_at) WHERE state <> 'attached';

-- Direct uploads: a presigned S3 POST handed to a client, until it completes.
CREATE TABLE direct_uploads (
    id uuid PRIMARY KEY,
    owner_id uuid NOT NULL,
    object_key text NOT NULL,
    content_type text NOT NULL,
    description text NOT NULL DEFAULT '',
    expires_at timestamptz NOT NULL,
    -- Set while one request processes it, so a concurrent one waits its turn.
    claimed_at timestamptz,
    -- The form stays usable until expires_at even after completion, so the
    -- row (and the sweep of its key) lives until then.
    completed_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX direct_uploads_expiry ON direct_uploads (expires_at);

-- Objects whose media row is gone but which could not be deleted at the time
-- (the store was down): the sweeper deletes them once it can.
CREATE TABLE orphan_objects (
    object_key text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);
