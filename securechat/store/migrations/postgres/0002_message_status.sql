-- A reply cut short (the client left mid-stream, the backend failed) is kept, marked.
ALTER TABLE messages ADD COLUMN status TEXT COLLATE "C" NOT NULL DEFAULT 'complete';
