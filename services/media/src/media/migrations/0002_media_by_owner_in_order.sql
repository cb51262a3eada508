-- An account's export (and its deletion) reads an owner's media in id
-- order; the index of 0001 (by owner, newest first) served no query and
-- made every page sort all of the owner's media.
CREATE INDEX media_by_owner_in_order ON media (owner_id, id);
DROP INDEX media_owner;
