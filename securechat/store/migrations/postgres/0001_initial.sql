-- 0001_initial.sql in PostgreSQL's types: bytea for ciphertext, keys and hashes, double
-- precision for times in seconds, and text compared byte by byte (COLLATE "C"), as SQLite
-- compares it, so lists and their cursors order the same on both databases.
CREATE TABLE users (
    id TEXT COLLATE "C" PRIMARY KEY,
    username TEXT COLLATE "C" NOT NULL,
    username_key TEXT COLLATE "C" NOT NULL UNIQUE,
    kdf TEXT COLLATE "C" NOT NULL,
    salt BYTEA NOT NULL,
    wrapped_key BYTEA NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL
);
CREATE TABLE sessions (
    token_hash BYTEA PRIMARY KEY,
    user_id TEXT COLLATE "C" NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    wrapped_key BYTEA NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    last_seen DOUBLE PRECISION NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id);
CREATE TABLE conversations (
    id TEXT COLLATE "C" PRIMARY KEY,
    user_id TEXT COLLATE "C" NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    title BYTEA NOT NULL,
    next_position INTEGER NOT NULL DEFAULT 0,
    created_at TEXT COLLATE "C" NOT NULL
);
CREATE INDEX conversations_user ON conversations(user_id, created_at);
CREATE TABLE messages (
    conversation_id TEXT COLLATE "C" NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    id TEXT COLLATE "C" NOT NULL UNIQUE,
    role TEXT COLLATE "C" NOT NULL,
    content BYTEA NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (conversation_id, position)
);
