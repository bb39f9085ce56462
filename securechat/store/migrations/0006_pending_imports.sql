-- An import writes its conversations in batches, hidden ('pending' names the import), and
-- shows them all in one short transaction at the end: a failed import shows nothing.
ALTER TABLE conversations ADD COLUMN pending TEXT;
