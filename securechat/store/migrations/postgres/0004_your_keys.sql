-- Your data, your keys (PostgreSQL): the same columns and table as the SQLite script, with
-- bytea for bytes and text compared byte by byte (COLLATE "C"), as everywhere here.
ALTER TABLE users ADD COLUMN recovery_salt bytea;
ALTER TABLE users ADD COLUMN recovery_wrap bytea;
ALTER TABLE users ADD COLUMN key_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN event_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN event_mac bytea;
ALTER TABLE users ADD COLUMN retention_days INTEGER;
ALTER TABLE sessions ADD COLUMN id TEXT COLLATE "C";
ALTER TABLE sessions ADD COLUMN details bytea;
UPDATE sessions SET id = replace(CAST(gen_random_uuid() AS VARCHAR), '-', '');
CREATE UNIQUE INDEX sessions_id ON sessions(id);
CREATE TABLE events (
    user_id TEXT COLLATE "C" NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    type TEXT COLLATE "C" NOT NULL,
    at TEXT COLLATE "C" NOT NULL,
    details bytea,
    mac bytea NOT NULL,
    PRIMARY KEY (user_id, seq)
);
