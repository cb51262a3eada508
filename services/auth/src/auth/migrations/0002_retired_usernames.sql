-- The usernames of deleted accounts: nobody registers one again before
-- retired_until, so nobody can pose as the person who left. Nothing else of
-- a deleted account is kept; the rows go once their time is up.
CREATE TABLE retired_usernames (
    username text PRIMARY KEY CHECK (username = lower(username)),
    retired_until timestamptz NOT NULL
);
