//! What the JSON API lists, a page at a time with keyset pagination: each
//! query continues after the sort key of the previous page's last row
//! (never OFFSET, so pages neither skip nor repeat rows as others are
//! added) and walks an index. Collections are filtered by who may read
//! them; the other lists belong to a collection the caller already may.

use super::views::contains_pattern;
use super::{
    visibility_binds, visible_sql, with_pool, ApiToken, BuildEntry, ContainerEntry, Db, DbError,
    Timestamp,
};
use crate::access::Viewer;

/// A collection as the API lists it, with its sort key.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CollectionRow {
    pub owner: String,
    pub name: String,
    pub private: bool,
    pub containers: i64,
    pub updated_at: Option<i64>,
    pub sort_owner: String,
    pub sort_name: String,
}

/// An image a tag got, from the tag history.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct HistoryRow {
    pub id: i64,
    pub tag: String,
    pub digest: String,
    pub size: i64,
    pub moved_at: i64,
    /// When the tag moved on; `None` while it still names the image.
    pub replaced_at: Option<i64>,
    pub commit_sha: Option<String>,
    pub recipe_path: Option<String>,
}

/// Collections the viewer may read whose `owner/name` or a container name
/// contains `$1`, by `owner/name` without case, after `($2, $3)`.
const VISIBLE_COLLECTIONS: &str = concat!(
    "SELECT r.owner, r.name, r.private,
         (SELECT COUNT(*) FROM containers c WHERE c.repository_id = r.id) AS containers,
         (SELECT MAX(t.updated_at) FROM containers c
          JOIN tags t ON t.container_id = c.id
          WHERE c.repository_id = r.id AND t.image_id IS NOT NULL) AS updated_at,
         lower(r.owner) AS sort_owner, lower(r.name) AS sort_name
     FROM repositories r
     WHERE ",
    visible_sql!("r", "$4", "$5"),
    " AND (lower(r.owner) || '/' || lower(r.name) LIKE $1 ESCAPE '\\'
          OR EXISTS (SELECT 1 FROM containers c
                     WHERE c.repository_id = r.id AND lower(c.name) LIKE $1 ESCAPE '\\'))
       AND (lower(r.owner) > $2 OR (lower(r.owner) = $2 AND lower(r.name) > $3))
     ORDER BY lower(r.owner), lower(r.name)
     LIMIT $6"
);

impl Db {
    /// Up to `limit` collections `viewer` may read, matching `search`
    /// (empty: all), after the sort key `after` (lowercase owner and name).
    pub async fn visible_collections(
        &self,
        viewer: &Viewer,
        search: &str,
        after: Option<&(String, String)>,
        limit: i64,
    ) -> Result<Vec<CollectionRow>, DbError> {
        let pattern = contains_pattern(search);
        let (login, user_id) = visibility_binds(viewer);
        let (after_owner, after_name) = after
            .map(|(owner, name)| (owner.as_str(), name.as_str()))
            .unwrap_or(("", ""));
        with_pool!(self, |pool| {
            sqlx::query_as(VISIBLE_COLLECTIONS)
                .bind(&pattern)
                .bind(after_owner)
                .bind(after_name)
                .bind(&login)
                .bind(user_id)
                .bind(limit)
                .fetch_all(pool)
                .await
        })
        .map_err(DbError::query("list visible collections"))
    }

    /// Up to `limit` of a repository's containers by name, after `after`.
    pub async fn containers_after(
        &self,
        repository_id: i64,
        after: &str,
        limit: i64,
    ) -> Result<Vec<ContainerEntry>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT c.name, COUNT(t.id) AS tags, MAX(t.updated_at) AS updated_at
                 FROM containers c
                 LEFT JOIN tags t ON t.container_id = c.id AND t.image_id IS NOT NULL
                 WHERE c.repository_id = $1 AND c.name > $2
                 GROUP BY c.id, c.name
                 ORDER BY c.name
                 LIMIT $3",
            )
            .bind(repository_id)
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await
        })
        .map_err(DbError::query("list containers"))
    }

    /// Up to `limit` images tags of a container got (only tag `tag` when
    /// given), newest first, before history row `before`.
    pub async fn tag_history_before(
        &self,
        container_id: i64,
        tag: Option<&str>,
        before: i64,
        limit: i64,
    ) -> Result<Vec<HistoryRow>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT h.id, t.name AS tag, i.digest, i.size, h.valid_from AS moved_at,
                        h.valid_to AS replaced_at, i.commit_sha, i.recipe_path
                 FROM tag_history h
                 JOIN tags t ON t.id = h.tag_id
                 JOIN images i ON i.id = h.image_id
                 WHERE t.container_id = $1 AND ($2 = '' OR t.name = $2) AND h.id < $3
                 ORDER BY h.id DESC
                 LIMIT $4",
            )
            .bind(container_id)
            .bind(tag.unwrap_or(""))
            .bind(before)
            .bind(limit)
            .fetch_all(pool)
            .await
        })
        .map_err(DbError::query("list tag history"))
    }

    /// Up to `limit` builds of a repository (of one container when
    /// `container_id` is given; of one status when `status` is), newest
    /// first, before build `before`.
    pub async fn builds_before(
        &self,
        repository_id: i64,
        container_id: Option<i64>,
        status: Option<&str>,
        before: i64,
        limit: i64,
    ) -> Result<Vec<BuildEntry>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT b.id, b.status, c.name AS container, rc.tag, b.branch, b.commit_sha,
                        b.queued_at, b.started_at, b.finished_at
                 FROM builds b
                 JOIN recipes rc ON rc.id = b.recipe_id
                 JOIN containers c ON c.id = rc.container_id
                 WHERE rc.repository_id = $1 AND ($2 = 0 OR rc.container_id = $2)
                   AND ($3 = '' OR b.status = $3) AND b.id < $4
                 ORDER BY b.id DESC
                 LIMIT $5",
            )
            .bind(repository_id)
            .bind(container_id.unwrap_or(0))
            .bind(status.unwrap_or(""))
            .bind(before)
            .bind(limit)
            .fetch_all(pool)
            .await
        })
        .map_err(DbError::query("list builds"))
    }

    /// Up to `limit` of a user's tokens, newest first, before token `before`.
    pub async fn user_tokens_before(
        &self,
        user_id: i64,
        before: i64,
        limit: i64,
    ) -> Result<Vec<ApiToken>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT * FROM api_tokens WHERE user_id = $1 AND id < $2
                 ORDER BY id DESC LIMIT $3",
            )
            .bind(user_id)
            .bind(before)
            .bind(limit)
            .fetch_all(pool)
            .await
        })
        .map_err(DbError::query("list user tokens"))
    }

    /// Revokes the user's token `id`; false when they have no such token
    /// or it was revoked already.
    pub async fn revoke_user_token(
        &self,
        user_id: i64,
        id: i64,
        now: Timestamp,
    ) -> Result<bool, DbError> {
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE api_tokens SET revoked_at = $3
                 WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL",
            )
            .bind(id)
            .bind(user_id)
            .bind(now)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })
        .map(|rows| rows > 0)
        .map_err(DbError::query("revoke user token"))
    }
}
