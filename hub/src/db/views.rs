//! What the web pages read: catalog pages, a collection's containers, a
//! container's tags, build lists and a build. Read-only; lists and builds
//! leave out private repositories the viewer may not read
//! ([`visible_sql!`]). Every list is
//! bounded (LIMIT/OFFSET or a fixed count) and walks an index: the catalog
//! `repositories_owner_name`, builds `builds_recipe`.

use super::{visibility_binds, visible_sql, with_pool, Db, DbError};
use crate::access::Viewer;

/// A collection as the catalog lists it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CatalogEntry {
    pub owner: String,
    pub name: String,
    pub containers: i64,
    /// When a tag of it last moved (unix milliseconds).
    pub updated_at: Option<i64>,
}

/// How catalog entries are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogOrder {
    /// By owner, then name, without case.
    Name,
    /// Most recently moved tag first; collections without images last.
    Updated,
}

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

/// The columns of [`CatalogEntry`] from `repositories r`, for repositories
/// the viewer (login `$4`, user id `$5`) may see whose `owner/name` or a
/// container name contains `$1`.
macro_rules! catalog_sql {
    ($order:literal) => {
        concat!(
            "SELECT r.owner, r.name,
                 (SELECT COUNT(*) FROM containers c WHERE c.repository_id = r.id) AS containers,
                 (SELECT MAX(t.updated_at) FROM containers c
                  JOIN tags t ON t.container_id = c.id
                  WHERE c.repository_id = r.id AND t.image_id IS NOT NULL) AS updated_at
             FROM repositories r
             WHERE ",
            visible_sql!("r", "$4", "$5"),
            " AND (
                 lower(r.owner) || '/' || lower(r.name) LIKE $1 ESCAPE '\\'
                 OR EXISTS (SELECT 1 FROM containers c
                            WHERE c.repository_id = r.id AND lower(c.name) LIKE $1 ESCAPE '\\'))
             ORDER BY ",
            $order,
            " LIMIT $2 OFFSET $3"
        )
    };
}
const CATALOG_BY_NAME: &str = catalog_sql!("lower(r.owner), lower(r.name)");
const CATALOG_BY_UPDATED: &str =
    catalog_sql!("updated_at DESC NULLS LAST, lower(r.owner), lower(r.name)");

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
    /// Collections `viewer` may see whose `owner/name` or a container name
    /// contains `search` (empty: all), `limit` of them from `offset`.
    pub async fn catalog_page(
        &self,
        viewer: &Viewer,
        search: &str,
        order: CatalogOrder,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<CatalogEntry>, DbError> {
        let sql = match order {
            CatalogOrder::Name => CATALOG_BY_NAME,
            CatalogOrder::Updated => CATALOG_BY_UPDATED,
        };
        let pattern = contains_pattern(search);
        let (login, user_id) = visibility_binds(viewer);
        with_pool!(self, |pool| {
            sqlx::query_as(sql)
                .bind(&pattern)
                .bind(limit)
                .bind(offset)
                .bind(&login)
                .bind(user_id)
                .fetch_all(pool)
                .await
        })
        .map_err(DbError::query("list catalog"))
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
}
