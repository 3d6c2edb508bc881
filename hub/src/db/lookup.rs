//! Lookups the download and catalog APIs answer from: which image a public
//! `owner/repo/container:tag` names, and whether an image may be served by
//! digest. Private repositories are left out until access control arrives.

use super::{with_pool, Db, DbError, Image};

impl Db {
    /// The image `owner/repo/container:tag` names now, when the repository
    /// is public. `owner` and `repo` compare without case, as on GitHub.
    pub async fn find_public_tagged_image(
        &self,
        owner: &str,
        repo: &str,
        container: &str,
        tag: &str,
    ) -> Result<Option<Image>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT i.* FROM repositories r
                 JOIN containers c ON c.repository_id = r.id
                 JOIN tags t ON t.container_id = c.id
                 JOIN images i ON i.id = t.image_id
                 WHERE lower(r.owner) = lower($1) AND lower(r.name) = lower($2)
                   AND c.name = $3 AND t.name = $4 AND NOT r.private",
            )
            .bind(owner)
            .bind(repo)
            .bind(container)
            .bind(tag)
            .fetch_optional(pool)
            .await
        })
        .map_err(DbError::query("find public tagged image"))
    }

    /// The image with `digest` (`sha256:<hex>`), when a public repository
    /// built it or one of its tags has ever named it.
    pub async fn find_public_image_by_digest(
        &self,
        digest: &str,
    ) -> Result<Option<Image>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT i.* FROM images i
                 WHERE i.digest = $1 AND (
                     EXISTS (SELECT 1 FROM repositories r
                             WHERE r.id = i.repository_id AND NOT r.private)
                     OR EXISTS (SELECT 1 FROM tag_history h
                                JOIN tags t ON t.id = h.tag_id
                                JOIN containers c ON c.id = t.container_id
                                JOIN repositories r ON r.id = c.repository_id
                                WHERE h.image_id = i.id AND NOT r.private))",
            )
            .bind(digest)
            .fetch_optional(pool)
            .await
        })
        .map_err(DbError::query("find public image by digest"))
    }
}
