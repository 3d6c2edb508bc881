-- 0004 access (SQLite): sign-in sessions and repository members.
-- Browser sign-in sessions. The cookie holds a random secret; only its
-- sha256 is stored, as for API tokens. `github_token` is the OAuth token of
-- the signed-in user, kept to list their repositories on /connect; it dies
-- with the session.
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash TEXT NOT NULL UNIQUE,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    github_token TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);

-- Who may do what to a repository beyond its public face: collaborators as
-- GitHub reports them (refreshed at each sign-in). The owner of a personal
-- repository needs no row: a matching login is enough.
CREATE TABLE repository_members (
    repository_id BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    permission TEXT NOT NULL CHECK (permission IN ('read', 'write', 'admin')),
    refreshed_at BIGINT NOT NULL,
    PRIMARY KEY (repository_id, user_id)
);
CREATE INDEX repository_members_user ON repository_members (user_id);
