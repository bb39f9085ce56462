-- As in SQLite: an import's conversations stay hidden ('pending' names the import) until
-- one short transaction shows them all.
ALTER TABLE conversations ADD COLUMN pending TEXT COLLATE "C";
