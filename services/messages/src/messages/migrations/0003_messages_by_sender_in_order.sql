-- An account's export pages through its messages in id order; the index of
-- 0002 (by sender alone) made every page sort all of them.
CREATE INDEX messages_by_sender_in_order ON messages (sender_id, id);
DROP INDEX messages_by_sender;
