-- Conversations are listed a page at a time: starred first, then by last activity.
ALTER TABLE conversations ADD COLUMN updated_at TEXT COLLATE "C";
ALTER TABLE conversations ADD COLUMN starred INTEGER NOT NULL DEFAULT 0;
UPDATE conversations SET updated_at = COALESCE(
    (SELECT MAX(m.created_at) FROM messages m WHERE m.conversation_id = conversations.id),
    created_at);
DROP INDEX conversations_user;
CREATE INDEX conversations_listing
    ON conversations(user_id, starred DESC, updated_at DESC, id DESC);
