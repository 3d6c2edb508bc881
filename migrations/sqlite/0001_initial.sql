-- 0001 initial schema (SQLite). The PostgreSQL file of the same number has
-- the same tables, columns and constraints; only the types are spelled in
-- each backend's dialect. Times are unix milliseconds in BIGINT columns on
-- both backends, so the same queries compare them. AUTOINCREMENT keeps ids
-- from being reused after a delete: build ids name log objects in storage.

-- People who logged in with GitHub.
CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    github_id BIGINT NOT NULL UNIQUE,
    login TEXT NOT NULL,
    name TEXT,
    avatar_url TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- GitHub App installations: an account that granted the App some repositories.
CREATE TABLE github_installations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    github_id BIGINT NOT NULL UNIQUE,
    account_login TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    deleted_at BIGINT
);

-- Repositories, shown as collections. `installation_id` is NULL in plain
-- webhook mode, where `webhook_secret` verifies the deliveries instead.
CREATE TABLE repositories (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    github_id BIGINT UNIQUE,
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    default_branch TEXT NOT NULL,
    -- JSON array of branch names to build; empty means the default branch.
    build_branches TEXT NOT NULL DEFAULT '[]',
    private BOOLEAN NOT NULL DEFAULT FALSE,
    paused BOOLEAN NOT NULL DEFAULT FALSE,
    webhook_secret TEXT,
    installation_id BIGINT REFERENCES github_installations (id) ON DELETE SET NULL,
    created_at BIGINT NOT NULL
);
-- GitHub names are case-insensitive: `Owner/Repo` and `owner/repo` are one.
CREATE UNIQUE INDEX repositories_owner_name ON repositories (lower(owner), lower(name));

-- Containers of a collection: one per recipe folder.
CREATE TABLE containers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    repository_id BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (repository_id, name)
);

-- Recipe files found in a repository, with the container and tag they build.
CREATE TABLE recipes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    repository_id BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    container_id BIGINT NOT NULL REFERENCES containers (id) ON DELETE CASCADE,
    tag TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (repository_id, path)
);

-- SIF images, stored once per content digest (`sha256:<hex>`), with the
-- provenance of the build that first produced them.
CREATE TABLE images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    digest TEXT NOT NULL UNIQUE CHECK (digest LIKE 'sha256:%'),
    size BIGINT NOT NULL CHECK (size >= 0),
    -- JSON object: SIF header, descriptors, labels.
    sif_metadata TEXT NOT NULL DEFAULT '{}',
    repository_id BIGINT REFERENCES repositories (id) ON DELETE SET NULL,
    commit_sha TEXT,
    recipe_path TEXT,
    base_image_digest TEXT,
    builder_version TEXT,
    -- Uploaded by a client (`apptainer push`) rather than built here.
    pushed BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL
);

-- Tags of a container and the image each names now.
CREATE TABLE tags (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    container_id BIGINT NOT NULL REFERENCES containers (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    image_id BIGINT REFERENCES images (id),
    -- A frozen tag keeps its image: rebuilds do not move it.
    frozen BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (container_id, name)
);

-- Every image a tag has named, and when; `valid_to` is NULL for the current one.
CREATE TABLE tag_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tag_id BIGINT NOT NULL REFERENCES tags (id) ON DELETE CASCADE,
    image_id BIGINT NOT NULL REFERENCES images (id),
    valid_from BIGINT NOT NULL,
    valid_to BIGINT
);
CREATE INDEX tag_history_tag ON tag_history (tag_id, valid_from);

-- Builds, which are also the queue's jobs (see hub/src/queue).
CREATE TABLE builds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    recipe_id BIGINT NOT NULL REFERENCES recipes (id) ON DELETE CASCADE,
    commit_sha TEXT NOT NULL,
    branch TEXT NOT NULL,
    trigger_kind TEXT NOT NULL CHECK (trigger_kind IN ('push', 'manual', 'rebuild')),
    priority BIGINT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'superseded')),
    queued_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    worker_id TEXT,
    lease_until BIGINT,
    attempt BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT NOT NULL CHECK (max_attempts >= 1),
    error TEXT,
    log_key TEXT,
    image_id BIGINT REFERENCES images (id)
);
-- What `claim` scans: the queued jobs in claim order.
CREATE INDEX builds_claim_order ON builds (priority DESC, queued_at, id) WHERE status = 'queued';
-- What `reap_expired` scans.
CREATE INDEX builds_running_lease ON builds (lease_until) WHERE status = 'running';
-- At most one queued build per recipe and branch: a newer one supersedes it.
CREATE UNIQUE INDEX builds_one_queued_per_recipe_branch ON builds (recipe_id, branch) WHERE status = 'queued';
CREATE INDEX builds_recipe ON builds (recipe_id, id);

-- Webhook deliveries, by GitHub's `X-GitHub-Delivery` id: dedupe and audit.
CREATE TABLE webhook_deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id TEXT NOT NULL UNIQUE,
    event TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    outcome TEXT
);

-- API tokens, stored as the hex sha256 of the secret. `user_id` is NULL
-- for tokens the hub issues to itself (e.g. the in-process worker).
CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash TEXT NOT NULL UNIQUE,
    user_id BIGINT REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    scope TEXT NOT NULL CHECK (scope IN ('read', 'push', 'admin', 'worker')),
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT,
    last_used_at BIGINT
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);
