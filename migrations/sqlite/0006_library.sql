-- 0006 library API (sqlite): what `apptainer push library://` needs.
-- A collection created by a push is a repository row with no GitHub id,
-- marked by `source`, so pages and the webhook code can tell it apart.
ALTER TABLE repositories ADD COLUMN source TEXT NOT NULL DEFAULT 'github'
    CHECK (source IN ('github', 'push'));

-- Images a client announced (`POST /v1/images`) and is uploading: nothing
-- is published until the upload completes and its bytes match `digest`,
-- then `image_id` names the published image. `secret_hash` is the sha256
-- of the upload's secret: the one in the URL a single upload PUTs to
-- without credentials, or a multipart upload's id; `received` is set once
-- the hub itself verified the bytes of a single upload.
CREATE TABLE library_uploads (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    container_id BIGINT NOT NULL REFERENCES containers (id) ON DELETE CASCADE,
    digest TEXT NOT NULL CHECK (digest LIKE 'sha256:%'),
    description TEXT NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    size BIGINT CHECK (size >= 0),
    secret_hash TEXT,
    multipart BOOLEAN NOT NULL DEFAULT FALSE,
    received BOOLEAN NOT NULL DEFAULT FALSE,
    image_id BIGINT REFERENCES images (id),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (container_id, digest)
);

-- Parts of a multipart upload received so far, staged in storage until
-- the upload completes (or is aborted).
CREATE TABLE library_upload_parts (
    upload_id BIGINT NOT NULL REFERENCES library_uploads (id) ON DELETE CASCADE,
    part_number BIGINT NOT NULL CHECK (part_number >= 1),
    size BIGINT NOT NULL CHECK (size >= 0),
    sha256 TEXT NOT NULL,
    PRIMARY KEY (upload_id, part_number)
);
