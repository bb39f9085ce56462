-- Your data, your keys: a recovery wrap, a version for compare-and-swap re-wraps, the
-- security log's chain head, per-user settings; sessions get an opaque id and sealed
-- details (browser, address); the security log itself.
ALTER TABLE users ADD COLUMN recovery_salt BLOB;
ALTER TABLE users ADD COLUMN recovery_wrap BLOB;
ALTER TABLE users ADD COLUMN key_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN event_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN event_mac BLOB;
ALTER TABLE users ADD COLUMN retention_days INTEGER;
ALTER TABLE sessions ADD COLUMN id TEXT;
ALTER TABLE sessions ADD COLUMN details BLOB;
UPDATE sessions SET id = lower(hex(randomblob(16)));
CREATE UNIQUE INDEX sessions_id ON sessions(id);
CREATE TABLE events (
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    at TEXT NOT NULL,
    details BLOB,
    mac BLOB NOT NULL,
    PRIMARY KEY (user_id, seq)
);
