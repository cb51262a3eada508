-- A deleted account's messages are found by sender (user.deleted).
CREATE INDEX messages_by_sender ON messages (sender_id);
