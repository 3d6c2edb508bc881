//! Images (stored once per content digest) and the tags that name them,
//! with each tag's history of earlier images.

use super::{with_pool, BeginWrite as _, Db, DbError, Timestamp};

/// A SIF image, identified by the sha256 of its bytes.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Image {
    pub id: i64,
    /// `sha256:<64 lowercase hex>`.
    pub digest: String,
    pub size: i64,
    /// The SIF header, descriptors and labels, as JSON.
    #[sqlx(json)]
    pub sif_metadata: serde_json::Value,
    /// Provenance of the build that first produced these bytes.
    pub repository_id: Option<i64>,
    pub commit_sha: Option<String>,
    pub recipe_path: Option<String>,
    pub base_image_digest: Option<String>,
    pub builder_version: Option<String>,
    /// Uploaded by a client (`apptainer push`) rather than built here.
    pub pushed: bool,
    pub created_at: Timestamp,
}

/// An image to record.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewImage {
    pub digest: String,
    pub size: u64,
    pub sif_metadata: serde_json::Value,
    pub repository_id: Option<i64>,
    pub commit_sha: Option<String>,
    pub recipe_path: Option<String>,
    pub base_image_digest: Option<String>,
    pub builder_version: Option<String>,
    pub pushed: bool,
}

/// The result of [`Db::insert_image`].
#[derive(Debug, Clone, PartialEq)]
pub struct StoredImage {
    pub image: Image,
    /// False when an image with the same digest was already stored: the
    /// existing row (and its provenance) is returned unchanged.
    pub inserted: bool,
}

/// A tag of a container.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Tag {
    pub id: i64,
    pub container_id: i64,
    pub name: String,
    /// The image the tag names now; NULL before its first build.
    pub image_id: Option<i64>,
    /// A frozen tag keeps its image: rebuilds do not move it.
    pub frozen: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One image a tag has named, from `valid_from` until `valid_to` (NULL
/// while it still does).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TagHistoryEntry {
    pub id: i64,
    pub tag_id: i64,
    pub image_id: i64,
    pub valid_from: Timestamp,
    pub valid_to: Option<Timestamp>,
}

/// The result of [`Db::set_tag`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagChange {
    pub tag: Tag,
    /// The image the tag named before; `None` for a new or empty tag.
    pub previous_image_id: Option<i64>,
    /// False when the tag already named this image.
    pub moved: bool,
}

/// Checks the `sha256:<hex>` form, so a bad digest never becomes a key.
pub(crate) fn check_digest(digest: &str) -> Result<(), DbError> {
    let valid = digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    });
    if valid {
        Ok(())
    } else {
        Err(DbError::InvalidValue {
            what: "image digest",
            value: digest.to_owned(),
            message: "expected sha256: and 64 lowercase hex digits",
        })
    }
}

/// Inserts `$image` (a [`NewImage`], its size `$size` checked as `i64`)
/// on the connection or transaction `$conn` unless its digest is stored;
/// evaluates to `Result<StoredImage, sqlx::Error>`. A macro so that
/// [`Db::insert_image`] and the queue's publish transaction share it on
/// both backends.
macro_rules! insert_image_in {
    ($conn:ident, $image:expr, $size:expr, $now:expr) => {
        async {
            let image: &$crate::db::NewImage = $image;
            let inserted: Option<$crate::db::Image> = sqlx::query_as(
                "INSERT INTO images (digest, size, sif_metadata, repository_id, commit_sha,
                     recipe_path, base_image_digest, builder_version, pushed, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (digest) DO NOTHING
                 RETURNING *",
            )
            .bind(&image.digest)
            .bind($size)
            .bind(sqlx::types::Json(&image.sif_metadata))
            .bind(image.repository_id)
            .bind(&image.commit_sha)
            .bind(&image.recipe_path)
            .bind(&image.base_image_digest)
            .bind(&image.builder_version)
            .bind(image.pushed)
            .bind($now)
            .fetch_optional(&mut *$conn)
            .await?;
            match inserted {
                Some(image) => Ok::<_, sqlx::Error>($crate::db::StoredImage {
                    image,
                    inserted: true,
                }),
                // Images are never deleted, so the conflicting row is still there.
                None => Ok($crate::db::StoredImage {
                    image: sqlx::query_as("SELECT * FROM images WHERE digest = $1")
                        .bind(&image.digest)
                        .fetch_one(&mut *$conn)
                        .await?,
                    inserted: false,
                }),
            }
        }
        .await
    };
}
pub(crate) use insert_image_in;

/// Points tag `$name` of container `$container_id` at `$image_id` inside
/// the write transaction `$tx`, keeping the history; evaluates to
/// `Result<Result<TagChange, i64>, sqlx::Error>`, the inner `Err` holding
/// the image a frozen tag keeps. Shared like [`insert_image_in`].
macro_rules! set_tag_in {
    ($tx:ident, $container_id:expr, $name:expr, $image_id:expr, $now:expr) => {
        async {
            let (container_id, name, image_id, now): (i64, &str, i64, $crate::db::Timestamp) =
                ($container_id, $name, $image_id, $now);
            // Upsert first: on SQLite the write lock is taken before the
            // tag is read, so no concurrent retag slips in between.
            let tag: $crate::db::Tag = sqlx::query_as($crate::db::UPSERT_TAG)
                .bind(container_id)
                .bind(name)
                .bind(now)
                .fetch_one(&mut *$tx)
                .await?;
            if tag.image_id == Some(image_id) {
                return Ok::<_, sqlx::Error>(Ok($crate::db::TagChange {
                    previous_image_id: tag.image_id,
                    tag,
                    moved: false,
                }));
            }
            if let (true, Some(current)) = (tag.frozen, tag.image_id) {
                return Ok(Err(current));
            }
            let moved: $crate::db::Tag = sqlx::query_as(
                "UPDATE tags SET image_id = $2, updated_at = $3 WHERE id = $1 RETURNING *",
            )
            .bind(tag.id)
            .bind(image_id)
            .bind(now)
            .fetch_one(&mut *$tx)
            .await?;
            sqlx::query(
                "UPDATE tag_history SET valid_to = $2 WHERE tag_id = $1 AND valid_to IS NULL",
            )
            .bind(tag.id)
            .bind(now)
            .execute(&mut *$tx)
            .await?;
            sqlx::query(
                "INSERT INTO tag_history (tag_id, image_id, valid_from) VALUES ($1, $2, $3)",
            )
            .bind(tag.id)
            .bind(image_id)
            .bind(now)
            .execute(&mut *$tx)
            .await?;
            $crate::db::note_tag_move_in!($tx, moved.container_id, moved.id, now)?;
            Ok(Ok($crate::db::TagChange {
                previous_image_id: tag.image_id,
                tag: moved,
                moved: true,
            }))
        }
        .await
    };
}
pub(crate) use set_tag_in;

/// An image size as the database stores it.
pub(crate) fn image_size(size: u64) -> Result<i64, DbError> {
    i64::try_from(size).map_err(|_| DbError::InvalidValue {
        what: "image size",
        value: size.to_string(),
        message: "larger than the database stores",
    })
}

impl Db {
    /// Records an image unless one with the same digest exists: identical
    /// bytes are stored once, whoever built them. Safe against concurrent
    /// inserts of the same digest.
    pub async fn insert_image(
        &self,
        image: &NewImage,
        now: Timestamp,
    ) -> Result<StoredImage, DbError> {
        check_digest(&image.digest)?;
        let size = image_size(image.size)?;
        with_pool!(self, |pool| async {
            let mut conn = pool.acquire().await?;
            insert_image_in!(conn, image, size, now)
        }
        .await)
        .map_err(DbError::query("insert image"))
    }

    pub async fn find_image_by_digest(&self, digest: &str) -> Result<Option<Image>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as("SELECT * FROM images WHERE digest = $1")
                .bind(digest)
                .fetch_optional(pool)
                .await
        })
        .map_err(DbError::query("find image by digest"))
    }

    pub async fn find_image(&self, id: i64) -> Result<Option<Image>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as("SELECT * FROM images WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await
        })
        .map_err(DbError::query("find image by id"))
    }

    /// Creates the tag (naming no image yet) when new; returns it either way.
    pub async fn upsert_tag(
        &self,
        container_id: i64,
        name: &str,
        now: Timestamp,
    ) -> Result<Tag, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as(UPSERT_TAG)
                .bind(container_id)
                .bind(name)
                .bind(now)
                .fetch_one(pool)
                .await
        })
        .map_err(DbError::query("upsert tag"))
    }

    pub async fn find_tag(&self, container_id: i64, name: &str) -> Result<Option<Tag>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as("SELECT * FROM tags WHERE container_id = $1 AND name = $2")
                .bind(container_id)
                .bind(name)
                .fetch_optional(pool)
                .await
        })
        .map_err(DbError::query("find tag"))
    }

    /// Points `container:name` at `image_id`, creating the tag when new.
    /// The image it named before stays in the tag's history. A frozen tag
    /// that names another image is not moved: [`DbError::TagFrozen`].
    pub async fn set_tag(
        &self,
        container_id: i64,
        name: &str,
        image_id: i64,
        now: Timestamp,
    ) -> Result<TagChange, DbError> {
        let outcome = with_pool!(self, |pool| async {
            let mut tx = pool.begin_write().await?;
            let outcome = set_tag_in!(tx, container_id, name, image_id, now)?;
            tx.commit().await?;
            Ok(outcome)
        }
        .await)
        .map_err(DbError::query("set tag"))?;
        outcome.map_err(|current| DbError::TagFrozen {
            container_id,
            tag: name.to_owned(),
            image_id: current,
        })
    }

    /// Freezes or thaws a tag; false when there is no such tag.
    pub async fn set_tag_frozen(
        &self,
        tag_id: i64,
        frozen: bool,
        now: Timestamp,
    ) -> Result<bool, DbError> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE tags SET frozen = $2, updated_at = $3 WHERE id = $1")
                .bind(tag_id)
                .bind(frozen)
                .bind(now)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })
        .map(|rows| rows > 0)
        .map_err(DbError::query("freeze tag"))
    }

    /// Every image the tag has named, newest first.
    pub async fn tag_history(&self, tag_id: i64) -> Result<Vec<TagHistoryEntry>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT * FROM tag_history WHERE tag_id = $1 ORDER BY valid_from DESC, id DESC",
            )
            .bind(tag_id)
            .fetch_all(pool)
            .await
        })
        .map_err(DbError::query("read tag history"))
    }
}

/// Creates a tag naming no image or, on conflict, returns the existing one.
pub(crate) const UPSERT_TAG: &str =
    "INSERT INTO tags (container_id, name, frozen, created_at, updated_at)
     VALUES ($1, $2, FALSE, $3, $3)
     ON CONFLICT (container_id, name) DO UPDATE SET name = excluded.name
     RETURNING *";
