//! What the web pages read: catalog pages, a collection's containers, a
//! container's tags, build lists and a build. Read-only; lists and builds
//! leave out private repositories the viewer may not read
//! ([`visible_sql!`]). Every list is
//! bounded (LIMIT/OFFSET or a fixed count) and walks an index: the catalog
//! `repositories_owner_name`, `repositories_last_updated` or
//! `repositories_downloads` (columns kept current where tags move and
//! images are downloaded, see migration 0005), builds `builds_recipe`.

use super::{visibility_binds, visible_sql, with_pool, Backend, Db, DbError};
use crate::access::Viewer;

/// A collection as the catalog lists it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CatalogEntry {
    pub owner: String,
    pub name: String,
    pub containers: i64,
    /// When a tag of it last moved (unix milliseconds).
    pub updated_at: Option<i64>,
    /// Completed downloads of its images.
    pub downloads: i64,
    /// The tag that moved last, with its container and image size.
    pub latest_container: Option<String>,
    pub latest_tag: Option<String>,
    pub latest_size: Option<i64>,
    /// Its latest build's status, leaving out cancelled and superseded ones.
    pub status: Option<String>,
    /// On a search's page: how many collections the search matches in all.
    pub matches: Option<i64>,
}

/// How catalog entries are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogOrder {
    /// By owner, then name, without case.
    Name,
    /// Most recently moved tag first; collections without images last.
    Updated,
    /// Most downloaded first.
    Downloads,
}

/// Matching collections are counted up to this many: the count scans what
/// it counts, so it stops here (pages then say "more than").
pub const CATALOG_COUNT_CAP: i64 = 10_000;

/// A container with its tag count.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ContainerEntry {
    pub name: String,
    /// Tags that name an image.
    pub tags: i64,
    pub updated_at: Option<i64>,
}

/// A tag with the image it names.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TaggedImage {
    pub tag: String,
    pub frozen: bool,
    pub updated_at: i64,
    pub digest: String,
    pub size: i64,
    #[sqlx(json)]
    pub sif_metadata: serde_json::Value,
    pub commit_sha: Option<String>,
    pub recipe_path: Option<String>,
    /// Pushed by a client rather than built here.
    pub pushed: bool,
}

/// A build with the container and tag its recipe makes.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BuildEntry {
    pub id: i64,
    pub status: String,
    pub container: String,
    pub tag: String,
    pub branch: String,
    pub commit_sha: String,
    pub queued_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// A build with where it belongs and what it made.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BuildDetail {
    #[sqlx(flatten)]
    pub entry: BuildEntry,
    pub owner: String,
    pub repo: String,
    pub recipe_path: String,
    pub trigger_kind: String,
    pub attempt: i64,
    pub error: Option<String>,
    pub log_key: Option<String>,
    pub image_digest: Option<String>,
}

/// A build with its collection, as the builds lists show it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BuildListEntry {
    #[sqlx(flatten)]
    pub entry: BuildEntry,
    pub owner: String,
    pub repo: String,
}

/// Which builds [`Db::build_list`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildFilter {
    /// One repository's; `None`: every visible one.
    pub repository_id: Option<i64>,
    /// Builds with this status (`running`, …); `None`: all.
    pub status: Option<String>,
}

/// An image a tag got, and when.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TagMoveEntry {
    pub container: String,
    pub tag: String,
    pub digest: String,
    pub moved_at: i64,
    pub commit_sha: Option<String>,
    pub recipe_path: Option<String>,
}

/// The columns of [`TagMoveEntry`] from the tag history, newest first,
/// at most `$2`, where `$1` is compared with `$column`.
macro_rules! tag_moves_sql {
    ($column:literal) => {
        concat!(
            "SELECT c.name AS container, t.name AS tag, i.digest, h.valid_from AS moved_at,
                    i.commit_sha, i.recipe_path
             FROM tag_history h
             JOIN tags t ON t.id = h.tag_id
             JOIN containers c ON c.id = t.container_id
             JOIN images i ON i.id = h.image_id
             WHERE ",
            $column,
            " = $1
             ORDER BY h.valid_from DESC, h.id DESC LIMIT $2"
        )
    };
}
const REPOSITORY_TAG_MOVES: &str = tag_moves_sql!("c.repository_id");
const CONTAINER_TAG_MOVES: &str = tag_moves_sql!("c.id");

/// The status of a container's (`$1`) latest build matching `$filter`,
/// leaving out builds that say nothing of the recipe's state: replaced or
/// stopped ones.
macro_rules! latest_status_sql {
    ($filter:literal) => {
        concat!(
            "SELECT b.status FROM builds b JOIN recipes rc ON rc.id = b.recipe_id
             WHERE rc.container_id = $1 AND b.status NOT IN ('cancelled', 'superseded')",
            $filter,
            " ORDER BY b.id DESC LIMIT 1"
        )
    };
}
const LATEST_STATUS: &str = latest_status_sql!("");
/// Of recipes making the tag `$2`.
const LATEST_TAG_STATUS: &str = latest_status_sql!(" AND rc.tag = $2");

/// Repositories the viewer (login `$login`, user id `$user`, see
/// [`visible_sql!`]) may see, with those matching the search when
/// `$filter` says so: `$1` is the search as a `LIKE` pattern (see
/// [`contains_pattern`]), `$raw` the lowercased search itself. Each
/// backend matches the stored search text or `owner/name` its fastest
/// way: SQLite's trigram full-text table (`repository_search`, migration
/// 0005) for three characters or more, `$raw` then an FTS5 phrase, else
/// `instr` (a byte search, far faster than its `LIKE`); PostgreSQL's
/// `LIKE`, which the trigram indexes answer for selective
/// searches, behind a `strpos` that rejects non-matching rows cheaply
/// when the planner scans the table for a common word; `OFFSET 0` keeps
/// that search a subquery planned (and hashed) on its own, so the order's
/// index is walked against the matches instead of testing each row's text.
macro_rules! catalog_where {
    (all, $raw:literal, $login:literal, $user:literal) => {
        concat!(" WHERE ", visible_sql!("r", $login, $user))
    };
    (sqlite_indexed, $raw:literal, $login:literal, $user:literal) => {
        concat!(
            " WHERE ",
            visible_sql!("r", $login, $user),
            " AND r.id IN (SELECT rowid FROM repository_search
                                                WHERE repository_search MATCH ",
            $raw,
            ")"
        )
    };
    (sqlite, $raw:literal, $login:literal, $user:literal) => {
        concat!(
            " WHERE ",
            visible_sql!("r", $login, $user),
            " AND (instr(r.search_text, ",
            $raw,
            ") > 0 OR instr(lower(r.owner) || '/' || lower(r.name), ",
            $raw,
            ") > 0)"
        )
    };
    (postgres, $raw:literal, $login:literal, $user:literal) => {
        concat!(
            " WHERE ",
            visible_sql!("r", $login, $user),
            " AND r.id IN (SELECT s.id FROM repositories s
                           WHERE (strpos(s.search_text, ",
            $raw,
            ") > 0 AND s.search_text LIKE $1 ESCAPE '\\')
                              OR lower(s.owner) || '/' || lower(s.name) LIKE $1 ESCAPE '\\'
                           OFFSET 0)"
        )
    };
}

/// How many collections a search matched, counted in the scan that finds
/// the page (so a search reads the table once); NULL when listing all.
macro_rules! catalog_matches {
    (all) => {
        ", CAST(NULL AS BIGINT) AS matches"
    };
    ($search:tt) => {
        ", COUNT(*) OVER () AS matches"
    };
}

/// The columns of [`CatalogEntry`] for one page (`LIMIT $2 OFFSET $3`,
/// the search in `$1` and `$4`, the viewer in `$5` and `$6`) of the
/// catalog in `$order`. The page's ids
/// are picked first, so the per-row joins and subqueries run for its rows
/// only, not the skipped ones.
macro_rules! catalog_sql {
    ($filter:tt, $order:tt) => {
        concat!(
            "SELECT r.owner, r.name,
                 (SELECT COUNT(*) FROM containers c WHERE c.repository_id = r.id) AS containers,
                 NULLIF(r.last_updated, 0) AS updated_at, r.downloads,
                 lc.name AS latest_container, lt.name AS latest_tag, li.size AS latest_size,
                 (SELECT b.status FROM builds b JOIN recipes rc ON rc.id = b.recipe_id
                  WHERE rc.repository_id = r.id AND b.status NOT IN ('cancelled', 'superseded')
                  ORDER BY b.id DESC LIMIT 1) AS status,
                 page.matches
             FROM (SELECT r.id",
            catalog_matches!($filter),
            " FROM repositories r",
            catalog_where!($filter, "$4", "$5", "$6"),
            " ORDER BY ",
            catalog_order!($order),
            " LIMIT $2 OFFSET $3) page
             JOIN repositories r ON r.id = page.id
             LEFT JOIN tags lt ON lt.id = r.latest_tag_id
             LEFT JOIN containers lc ON lc.id = lt.container_id
             LEFT JOIN images li ON li.id = lt.image_id
             ORDER BY ",
            catalog_order!($order)
        )
    };
}
/// Each order ends with the name, so equal keys page stably; each is the
/// start of an index's column list (migration 0005), which also holds
/// `private`, so SQLite walks it without reading skipped rows.
macro_rules! catalog_order {
    (name) => {
        "lower(r.owner), lower(r.name)"
    };
    (updated) => {
        "r.last_updated DESC, lower(r.owner), lower(r.name)"
    };
    (downloads) => {
        "r.downloads DESC, lower(r.owner), lower(r.name)"
    };
}

/// The page queries by (backend for a search, order).
macro_rules! catalog_sqls {
    ($filter:tt) => {
        [
            catalog_sql!($filter, name),
            catalog_sql!($filter, updated),
            catalog_sql!($filter, downloads),
        ]
    };
}
const CATALOG_ALL: [&str; 3] = catalog_sqls!(all);
const CATALOG_SEARCH_SQLITE: [&str; 3] = catalog_sqls!(sqlite);
const CATALOG_SEARCH_SQLITE_INDEXED: [&str; 3] = catalog_sqls!(sqlite_indexed);
const CATALOG_SEARCH_POSTGRES: [&str; 3] = catalog_sqls!(postgres);

/// How many collections match, at most `$2` (the search in `$1` and `$3`,
/// the viewer in `$4` and `$5`).
macro_rules! catalog_count_sql {
    ($filter:tt) => {
        concat!(
            "SELECT COUNT(*) FROM (SELECT 1 AS one FROM repositories r",
            catalog_where!($filter, "$3", "$4", "$5"),
            " LIMIT $2) capped"
        )
    };
}
const CATALOG_ALL_COUNT: &str = catalog_count_sql!(all);
const CATALOG_SEARCH_COUNT_SQLITE: &str = catalog_count_sql!(sqlite);
const CATALOG_SEARCH_COUNT_SQLITE_INDEXED: &str = catalog_count_sql!(sqlite_indexed);
const CATALOG_SEARCH_COUNT_POSTGRES: &str = catalog_count_sql!(postgres);

/// What the catalog search finds in a repository besides its name: one
/// lowercase line per `container:tag` and per `label=value` of the images
/// its tags name, sorted and without repeats. Rows are (container, tag,
/// the image's SIF metadata); label values that are not strings count as
/// their JSON text.
pub(crate) fn catalog_search_text(rows: &[(String, String, serde_json::Value)]) -> String {
    let mut lines = std::collections::BTreeSet::new();
    for (container, tag, metadata) in rows {
        lines.insert(format!("{container}:{tag}").to_lowercase());
        let labels = metadata
            .get("labels")
            .and_then(serde_json::Value::as_object);
        for (key, value) in labels.into_iter().flatten() {
            let value = match value {
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            lines.insert(format!("{key}={value}").to_lowercase());
        }
    }
    lines.into_iter().collect::<Vec<_>>().join("\n")
}

/// Records in the write transaction `$tx` that tag `$tag_id` of container
/// `$container_id` just moved at `$now`: the repository's `last_updated`,
/// `latest_tag_id` and `search_text` (rebuilt from all its tags that name
/// an image). Evaluates to `Result<(), sqlx::Error>`; called by
/// `set_tag_in!`, so it runs wherever a tag moves.
macro_rules! note_tag_move_in {
    ($tx:ident, $container_id:expr, $tag_id:expr, $now:expr) => {
        async {
            let (container_id, tag_id, now): (i64, i64, $crate::db::Timestamp) =
                ($container_id, $tag_id, $now);
            let rows: Vec<(String, String, sqlx::types::Json<serde_json::Value>)> =
                sqlx::query_as(
                    "SELECT c.name, t.name, i.sif_metadata
                     FROM containers c
                     JOIN tags t ON t.container_id = c.id
                     JOIN images i ON i.id = t.image_id
                     WHERE c.repository_id = (SELECT repository_id FROM containers WHERE id = $1)",
                )
                .bind(container_id)
                .fetch_all(&mut *$tx)
                .await?;
            let rows: Vec<(String, String, serde_json::Value)> = rows
                .into_iter()
                .map(|(container, tag, metadata)| (container, tag, metadata.0))
                .collect();
            sqlx::query(
                "UPDATE repositories SET last_updated = $2, latest_tag_id = $3, search_text = $4
                 WHERE id = (SELECT repository_id FROM containers WHERE id = $1)",
            )
            .bind(container_id)
            .bind(now)
            .bind(tag_id)
            .bind($crate::db::catalog_search_text(&rows))
            .execute(&mut *$tx)
            .await?;
            Ok::<_, sqlx::Error>(())
        }
        .await
    };
}
pub(crate) use note_tag_move_in;

/// The columns of [`BuildEntry`] from `builds b`, `recipes rc`, `containers c`.
macro_rules! build_entry_sql {
    ($rest:literal) => {
        concat!(
            "SELECT b.id, b.status, c.name AS container, rc.tag, b.branch, b.commit_sha,
                    b.queued_at, b.started_at, b.finished_at",
            $rest
        )
    };
}

/// The latest builds of a repository (`$1`), at most `$2`, newest first.
const REPOSITORY_BUILDS: &str = build_entry_sql!(
    " FROM builds b
      JOIN recipes rc ON rc.id = b.recipe_id
      JOIN containers c ON c.id = rc.container_id
      WHERE rc.repository_id = $1
      ORDER BY b.id DESC LIMIT $2"
);

/// The latest builds of a container (`$1`), at most `$2`, newest first.
const CONTAINER_BUILDS: &str = build_entry_sql!(
    " FROM builds b
      JOIN recipes rc ON rc.id = b.recipe_id
      JOIN containers c ON c.id = rc.container_id
      WHERE rc.container_id = $1
      ORDER BY b.id DESC LIMIT $2"
);

/// Which catalog query answers a search on a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SearchKind {
    All,
    /// Through the trigram index: three characters or more.
    SqliteIndexed,
    SqliteScan,
    Postgres,
}

fn search_kind(search: &str, backend: Backend) -> SearchKind {
    match backend {
        _ if search.is_empty() => SearchKind::All,
        Backend::Sqlite if search.chars().count() >= 3 => SearchKind::SqliteIndexed,
        Backend::Sqlite => SearchKind::SqliteScan,
        Backend::Postgres => SearchKind::Postgres,
    }
}

/// The search as the `$raw` parameter of `kind`'s query: an FTS5 phrase
/// (quoted, so the words match as one substring) for the trigram table,
/// else the lowercased text.
fn search_value(search: &str, kind: SearchKind) -> String {
    let lower = search.to_lowercase();
    match kind {
        SearchKind::SqliteIndexed => format!("\"{}\"", lower.replace('"', "\"\"")),
        SearchKind::All | SearchKind::SqliteScan | SearchKind::Postgres => lower,
    }
}

/// The columns of [`BuildListEntry`] of builds of repository `$3` (all
/// when negative) with status `$4` (all when empty), up to the visibility
/// condition that ends it.
macro_rules! build_list_head {
    () => {
        build_entry_sql!(
            ", r.owner, r.name AS repo
             FROM builds b
             JOIN recipes rc ON rc.id = b.recipe_id
             JOIN containers c ON c.id = rc.container_id
             JOIN repositories r ON r.id = rc.repository_id
             WHERE ($3 < 0 OR r.id = $3) AND ($4 = '' OR b.status = $4) AND "
        )
    };
}

/// A `LIKE` pattern matching `text` anywhere, without case; `%`, `_` and
/// `\` in it match only themselves.
pub(super) fn contains_pattern(text: &str) -> String {
    let mut pattern = String::from("%");
    for ch in text.to_lowercase().chars() {
        if matches!(ch, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(ch);
    }
    pattern.push('%');
    pattern
}

impl Db {
    /// Collections `viewer` may see whose `owner/name`, a container, tag or
    /// label contains `search` (empty: all), `limit` of them from `offset`.
    pub async fn catalog_page(
        &self,
        viewer: &Viewer,
        search: &str,
        order: CatalogOrder,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<CatalogEntry>, DbError> {
        let sqls = match search_kind(search, self.backend()) {
            SearchKind::All => CATALOG_ALL,
            SearchKind::SqliteIndexed => CATALOG_SEARCH_SQLITE_INDEXED,
            SearchKind::SqliteScan => CATALOG_SEARCH_SQLITE,
            SearchKind::Postgres => CATALOG_SEARCH_POSTGRES,
        };
        let sql = match order {
            CatalogOrder::Name => sqls[0],
            CatalogOrder::Updated => sqls[1],
            CatalogOrder::Downloads => sqls[2],
        };
        let pattern = contains_pattern(search);
        let raw = search_value(search, search_kind(search, self.backend()));
        let (login, user_id) = visibility_binds(viewer);
        with_pool!(self, |pool| {
            sqlx::query_as(sql)
                .bind(&pattern)
                .bind(limit)
                .bind(offset)
                .bind(&raw)
                .bind(&login)
                .bind(user_id)
                // A search is planned for its words (a prepared plan would
                // not know whether the trigram index pays).
                .persistent(search.is_empty())
                .fetch_all(pool)
                .await
        })
        .map_err(DbError::query("list catalog"))
    }

    /// How many collections [`Db::catalog_page`] finds for `search`,
    /// counted up to one more than [`CATALOG_COUNT_CAP`]: a count above
    /// the cap means "more than the cap".
    pub async fn catalog_count(&self, viewer: &Viewer, search: &str) -> Result<i64, DbError> {
        let kind = search_kind(search, self.backend());
        let sql = match kind {
            SearchKind::All => CATALOG_ALL_COUNT,
            SearchKind::SqliteIndexed => CATALOG_SEARCH_COUNT_SQLITE_INDEXED,
            SearchKind::SqliteScan => CATALOG_SEARCH_COUNT_SQLITE,
            SearchKind::Postgres => CATALOG_SEARCH_COUNT_POSTGRES,
        };
        let pattern = contains_pattern(search);
        let raw = search_value(search, kind);
        let (login, user_id) = visibility_binds(viewer);
        with_pool!(self, |pool| {
            sqlx::query_scalar(sql)
                .bind(&pattern)
                .bind(CATALOG_COUNT_CAP + 1)
                .bind(&raw)
                .bind(&login)
                .bind(user_id)
                .persistent(search.is_empty())
                .fetch_one(pool)
                .await
        })
        .map_err(DbError::query("count catalog"))
    }

    /// Counts a completed download of an image of `owner/name`.
    pub async fn count_repository_download(&self, owner: &str, name: &str) -> Result<(), DbError> {
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE repositories SET downloads = downloads + 1
                 WHERE lower(owner) = lower($1) AND lower(name) = lower($2)",
            )
            .bind(owner)
            .bind(name)
            .execute(pool)
            .await
            .map(|_| ())
        })
        .map_err(DbError::query("count a download"))
    }

    /// Counts a completed download of the image `digest`, for the
    /// repository that built it.
    pub async fn count_image_download(&self, digest: &str) -> Result<(), DbError> {
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE repositories SET downloads = downloads + 1
                 WHERE id = (SELECT repository_id FROM images WHERE digest = $1)",
            )
            .bind(digest)
            .execute(pool)
            .await
            .map(|_| ())
        })
        .map_err(DbError::query("count a download"))
    }

    /// A repository's containers by name, with how many tags name an image.
    pub async fn container_entries(
        &self,
        repository_id: i64,
    ) -> Result<Vec<ContainerEntry>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT c.name, COUNT(t.id) AS tags, MAX(t.updated_at) AS updated_at
                 FROM containers c
                 LEFT JOIN tags t ON t.container_id = c.id AND t.image_id IS NOT NULL
                 WHERE c.repository_id = $1
                 GROUP BY c.id, c.name
                 ORDER BY c.name",
            )
            .bind(repository_id)
            .fetch_all(pool)
            .await
        })
        .map_err(DbError::query("list containers"))
    }

    /// A container's tags that name an image, by tag name.
    pub async fn tagged_images(&self, container_id: i64) -> Result<Vec<TaggedImage>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT t.name AS tag, t.frozen, t.updated_at, i.digest, i.size, i.sif_metadata,
                        i.commit_sha, i.recipe_path, i.pushed
                 FROM tags t JOIN images i ON i.id = t.image_id
                 WHERE t.container_id = $1
                 ORDER BY t.name",
            )
            .bind(container_id)
            .fetch_all(pool)
            .await
        })
        .map_err(DbError::query("list tagged images"))
    }

    /// A repository's latest `limit` builds, newest first.
    pub async fn repository_builds(
        &self,
        repository_id: i64,
        limit: i64,
    ) -> Result<Vec<BuildEntry>, DbError> {
        self.rows_of(REPOSITORY_BUILDS, repository_id, limit)
            .await
            .map_err(DbError::query("list repository builds"))
    }

    /// A container's latest `limit` builds, newest first.
    pub async fn container_builds(
        &self,
        container_id: i64,
        limit: i64,
    ) -> Result<Vec<BuildEntry>, DbError> {
        self.rows_of(CONTAINER_BUILDS, container_id, limit)
            .await
            .map_err(DbError::query("list container builds"))
    }

    /// The latest `limit` images tags of a repository got, newest first.
    pub async fn repository_tag_moves(
        &self,
        repository_id: i64,
        limit: i64,
    ) -> Result<Vec<TagMoveEntry>, DbError> {
        self.rows_of(REPOSITORY_TAG_MOVES, repository_id, limit)
            .await
            .map_err(DbError::query("list repository tag moves"))
    }

    /// The latest `limit` images tags of a container got, newest first.
    pub async fn container_tag_moves(
        &self,
        container_id: i64,
        limit: i64,
    ) -> Result<Vec<TagMoveEntry>, DbError> {
        self.rows_of(CONTAINER_TAG_MOVES, container_id, limit)
            .await
            .map_err(DbError::query("list container tag moves"))
    }

    /// Rows of `sql`, a query of one id (`$1`) and a row limit (`$2`).
    async fn rows_of<T>(
        &self,
        sql: &'static str,
        id: i64,
        limit: i64,
    ) -> Result<Vec<T>, sqlx::Error>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + Send
            + Unpin,
    {
        with_pool!(self, |pool| {
            sqlx::query_as(sql)
                .bind(id)
                .bind(limit)
                .fetch_all(pool)
                .await
        })
    }

    /// The status of the container's latest build that was neither
    /// cancelled nor superseded, of recipes making `tag` when given.
    pub async fn latest_build_status(
        &self,
        container_id: i64,
        tag: Option<&str>,
    ) -> Result<Option<String>, DbError> {
        let found: Option<(String,)> = match tag {
            None => with_pool!(self, |pool| {
                sqlx::query_as(LATEST_STATUS)
                    .bind(container_id)
                    .fetch_optional(pool)
                    .await
            }),
            Some(tag) => with_pool!(self, |pool| {
                sqlx::query_as(LATEST_TAG_STATUS)
                    .bind(container_id)
                    .bind(tag)
                    .fetch_optional(pool)
                    .await
            }),
        }
        .map_err(DbError::query("find latest build status"))?;
        Ok(found.map(|(status,)| status))
    }

    /// The build `id`, when `viewer` may read its repository.
    pub async fn readable_build(
        &self,
        viewer: &Viewer,
        id: i64,
    ) -> Result<Option<BuildDetail>, DbError> {
        let (login, user_id) = visibility_binds(viewer);
        with_pool!(self, |pool| {
            sqlx::query_as(concat!(
                build_entry_sql!(
                    ", r.owner, r.name AS repo, rc.path AS recipe_path, b.trigger_kind, b.attempt,
                   b.error, b.log_key, i.digest AS image_digest
                 FROM builds b
                 JOIN recipes rc ON rc.id = b.recipe_id
                 JOIN containers c ON c.id = rc.container_id
                 JOIN repositories r ON r.id = rc.repository_id
                 LEFT JOIN images i ON i.id = b.image_id
                 WHERE b.id = $1 AND "
                ),
                visible_sql!("r", "$2", "$3")
            ))
            .bind(id)
            .bind(&login)
            .bind(user_id)
            .fetch_optional(pool)
            .await
        })
        .map_err(DbError::query("find readable build"))
    }

    /// Builds `viewer` (login `$1`, user id `$2`) may see matching
    /// `filter`, newest first, `limit` of them from `offset`.
    pub async fn build_list(
        &self,
        viewer: &Viewer,
        filter: &BuildFilter,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<BuildListEntry>, DbError> {
        let (login, user_id) = visibility_binds(viewer);
        with_pool!(self, |pool| {
            sqlx::query_as(concat!(
                build_list_head!(),
                visible_sql!("r", "$1", "$2"),
                " ORDER BY b.id DESC LIMIT $5 OFFSET $6"
            ))
            .bind(&login)
            .bind(user_id)
            .bind(filter.repository_id.unwrap_or(-1))
            .bind(filter.status.as_deref().unwrap_or(""))
            .bind(limit)
            .bind(offset)
            .fetch_all(pool)
            .await
        })
        .map_err(DbError::query("list builds"))
    }
}

#[cfg(test)]
mod tests {
    use super::contains_pattern;

    #[test]
    fn patterns_escape_wildcards() {
        assert_eq!(contains_pattern(""), "%%");
        assert_eq!(contains_pattern("Lolcow"), "%lolcow%");
        assert_eq!(contains_pattern("a_b%c\\"), "%a\\_b\\%c\\\\%");
    }

    #[test]
    fn sqlite_searches_of_three_characters_use_the_index() {
        use super::{search_kind, search_value, Backend, SearchKind};
        assert_eq!(search_kind("", Backend::Sqlite), SearchKind::All);
        assert_eq!(search_kind("ab", Backend::Sqlite), SearchKind::SqliteScan);
        assert_eq!(
            search_kind("abc", Backend::Sqlite),
            SearchKind::SqliteIndexed
        );
        assert_eq!(search_kind("ab", Backend::Postgres), SearchKind::Postgres);
        assert_eq!(
            search_value("Say \"Hi\"", SearchKind::SqliteIndexed),
            "\"say \"\"hi\"\"\""
        );
        assert_eq!(search_value("AB", SearchKind::SqliteScan), "ab");
    }
}
