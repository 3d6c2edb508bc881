//! Lookups of a container's images through its tags, for the clients that
//! name images by digest or list tags (the shub and OCI APIs): which
//! images a container's tags name or have named, and which tags it has.

use super::{with_pool, Container, Db, DbError, Image, Repository};
use crate::access::Viewer;

/// An image and a tag of its container that names or has named it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TagAndImage {
    pub tag: String,
    #[sqlx(flatten)]
    pub image: Image,
}

/// Pairs of tag and image over the tags' history; the caller adds the
/// filter and order.
macro_rules! select_tagged_images {
    ($rest:literal) => {
        concat!(
            "SELECT t.name AS tag, i.* FROM tags t
             JOIN tag_history h ON h.tag_id = t.id
             JOIN images i ON i.id = h.image_id
             WHERE t.container_id = $1 ",
            $rest
        )
    };
}

impl Db {
    /// The container `owner/repo/container` when `viewer` may read its
    /// repository; a private one is `None` for others, as a missing one is.
    pub async fn readable_container(
        &self,
        viewer: &Viewer,
        owner: &str,
        repo: &str,
        container: &str,
    ) -> Result<Option<(Repository, Container)>, DbError> {
        let Some(repository) = self.readable_repository(viewer, owner, repo).await? else {
            return Ok(None);
        };
        Ok(self
            .find_container(repository.id, container)
            .await?
            .map(|container| (repository, container)))
    }

    /// The image with `digest` that a tag of the container (`tag` when
    /// given) names now or has named. The tag naming it now wins, then
    /// the one that named it last.
    pub async fn find_container_image_by_digest(
        &self,
        container_id: i64,
        digest: &str,
        tag: Option<&str>,
    ) -> Result<Option<TagAndImage>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as(select_tagged_images!(
                "AND i.digest = $2 AND ($3 IS NULL OR t.name = $3)
                 ORDER BY CASE WHEN t.image_id = i.id THEN 0 ELSE 1 END,
                     h.valid_from DESC, h.id DESC
                 LIMIT 1"
            ))
            .bind(container_id)
            .bind(digest)
            .bind(tag)
            .fetch_optional(pool)
            .await
        })
        .map_err(DbError::query("find container image by digest"))
    }

    /// The latest `limit` pairs of tag and image the container's tags have
    /// made, newest first.
    pub async fn container_tagged_images(
        &self,
        container_id: i64,
        limit: i64,
    ) -> Result<Vec<TagAndImage>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as(select_tagged_images!(
                "ORDER BY h.valid_from DESC, h.id DESC LIMIT $2"
            ))
            .bind(container_id)
            .bind(limit)
            .fetch_all(pool)
            .await
        })
        .map_err(DbError::query("list container tagged images"))
    }

    /// The names of the container's tags that name an image, in byte
    /// order (sorted here: the two backends' collations differ).
    pub async fn container_tag_names(&self, container_id: i64) -> Result<Vec<String>, DbError> {
        let mut names: Vec<String> = with_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT name FROM tags WHERE container_id = $1 AND image_id IS NOT NULL",
            )
            .bind(container_id)
            .fetch_all(pool)
            .await
        })
        .map_err(DbError::query("list container tags"))?;
        names.sort_unstable();
        Ok(names)
    }
}
