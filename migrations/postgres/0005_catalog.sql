-- 0005 catalog columns (PostgreSQL): what the catalog page sorts and
-- searches by, stored on the repository so every sort walks an index and
-- a row needs no aggregate over its tags.
--   last_updated: when a tag of it last moved (unix ms; 0: never), set
--     where tags move, in the same transaction.
--   latest_tag_id: the tag that moved last, for the row's "latest tag".
--   search_text: lowercase lines `container:tag` and `label=value` of the
--     tags that name an image, rewritten where tags move; the catalog
--     search matches it (and owner/name) by substring.
--   downloads: completed image downloads (see hub/src/api/download.rs).
ALTER TABLE repositories ADD COLUMN last_updated BIGINT NOT NULL DEFAULT 0;
ALTER TABLE repositories ADD COLUMN latest_tag_id BIGINT REFERENCES tags (id) ON DELETE SET NULL;
ALTER TABLE repositories ADD COLUMN search_text TEXT NOT NULL DEFAULT '';
ALTER TABLE repositories ADD COLUMN downloads BIGINT NOT NULL DEFAULT 0;

-- Backfill from the tags there are.
UPDATE repositories r SET
    last_updated = COALESCE((
        SELECT MAX(t.updated_at) FROM containers c JOIN tags t ON t.container_id = c.id
        WHERE c.repository_id = r.id AND t.image_id IS NOT NULL), 0),
    latest_tag_id = (
        SELECT t.id FROM containers c JOIN tags t ON t.container_id = c.id
        WHERE c.repository_id = r.id AND t.image_id IS NOT NULL
        ORDER BY t.updated_at DESC, t.id DESC LIMIT 1),
    search_text = COALESCE((
        SELECT string_agg(lower(c.name || ':' || t.name), E'\n')
        FROM containers c JOIN tags t ON t.container_id = c.id
        WHERE c.repository_id = r.id AND t.image_id IS NOT NULL), '')
      || E'\n' || COALESCE((
        SELECT string_agg(lower(l.key || '=' || l.value), E'\n')
        FROM containers c JOIN tags t ON t.container_id = c.id
        JOIN images i ON i.id = t.image_id,
        jsonb_each_text(CASE jsonb_typeof(i.sif_metadata -> 'labels')
                        WHEN 'object' THEN i.sif_metadata -> 'labels'
                        ELSE '{}'::jsonb END) l
        WHERE c.repository_id = r.id), '');

-- One index per catalog order, ending in `private` so the visibility test
-- reads the index, not the row, and including the columns the expressions
-- read, so a page is an index-only scan that never visits the rows it skips.
CREATE INDEX repositories_catalog_name ON repositories (lower(owner), lower(name), private)
    INCLUDE (owner, name, id);
CREATE INDEX repositories_last_updated ON repositories (last_updated DESC, lower(owner), lower(name), private)
    INCLUDE (owner, name, id);
CREATE INDEX repositories_downloads ON repositories (downloads DESC, lower(owner), lower(name), private)
    INCLUDE (owner, name, id);
-- A container's builds and latest status (container and badge pages) go
-- through its recipes.
CREATE INDEX recipes_container ON recipes (container_id);

-- Substring search (`LIKE '%text%'`) through trigram indexes, so a
-- selective search reads a few rows, not the table. pg_trgm ships with
-- PostgreSQL (contrib) and is a trusted extension: the database's owner
-- may create it. (SQLite scans the column in process, which is fast.)
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX repositories_search_text ON repositories USING gin (search_text gin_trgm_ops);
CREATE INDEX repositories_full_name_search ON repositories
    USING gin ((lower(owner) || '/' || lower(name)) gin_trgm_ops);
