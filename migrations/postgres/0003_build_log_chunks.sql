-- 0003 build log chunks (PostgreSQL): what a worker streams while a build runs.
-- A chunk is keyed by build, attempt and sequence number, so a chunk sent
-- twice (a retried request) is stored once. When the build ends the hub
-- writes the assembled log to storage and deletes the chunks.
CREATE TABLE build_log_chunks (
    build_id BIGINT NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    attempt BIGINT NOT NULL,
    seq BIGINT NOT NULL CHECK (seq >= 0),
    text TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (build_id, attempt, seq)
);
