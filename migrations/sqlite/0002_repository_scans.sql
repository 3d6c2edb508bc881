-- Requests to list a repository's tree at a commit and build every recipe
-- in it: written with the webhook delivery that needs one (a push beyond
-- the 20 commits a payload lists, the first push of a new repository) and
-- worked off by the hub in the background, so a restart loses none.
CREATE TABLE repository_scans (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    repository_id BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    commit_sha TEXT NOT NULL,
    branch TEXT NOT NULL,
    delivery_id TEXT,
    requested_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    -- NULL while pending.
    done_at BIGINT,
    -- What the scan did, or the last error.
    outcome TEXT
);

CREATE INDEX repository_scans_pending ON repository_scans (requested_at) WHERE done_at IS NULL;
