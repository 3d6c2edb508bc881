//! What the library API (`apptainer push/pull/search library://`) asks
//! of the catalog beyond the shared lookups: entities, collections pushed
//! by clients, containers and their tags, the uploads of pushed images
//! and their staged parts, and search. Visibility follows the access
//! rules: private repositories only for their owner and members.

use super::{
    visibility_binds, visible_sql, with_pool, BeginWrite as _, Container, Db, DbError, Repository,
    Timestamp,
};
use crate::access::Viewer;

/// An image a client announced and is uploading (or uploaded).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LibraryUpload {
    pub id: i64,
    pub container_id: i64,
    /// `sha256:<hex>`, as the client announced it.
    pub digest: String,
    pub description: String,
    pub user_id: i64,
    /// The size announced when the upload started.
    pub size: Option<i64>,
    /// sha256 of the upload's secret: the one in a single upload's URL,
    /// or a multipart upload's id.
    pub secret_hash: Option<String>,
    pub multipart: bool,
    /// The hub verified the bytes of a single upload it received itself.
    pub received: bool,
    /// The published image, once the upload completed.
    pub image_id: Option<i64>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One staged part of a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LibraryUploadPart {
    pub upload_id: i64,
    pub part_number: i64,
    pub size: i64,
    pub sha256: String,
}

/// A tag of a container and the image it names.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LibraryTag {
    pub name: String,
    pub image_id: i64,
    pub size: i64,
}

/// A container a search found, with its collection.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FoundContainer {
    pub id: i64,
    pub name: String,
    pub repository_id: i64,
    pub owner: String,
    pub repository: String,
    pub private: bool,
    pub created_at: Timestamp,
}

/// `%value%` for `LIKE … ESCAPE '\'`, matching `value` literally.
fn like_pattern(value: &str) -> String {
    let mut pattern = String::with_capacity(value.len() + 2);
    pattern.push('%');
    for c in value.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

impl Db {
    /// Whether `name` is an entity the viewer can see: a user of the hub,
    /// or the owner of a repository the viewer may read.
    pub async fn library_entity_exists(
        &self,
        viewer: &Viewer,
        name: &str,
    ) -> Result<bool, DbError> {
        let (login, user_id) = visibility_binds(viewer);
        with_pool!(self, |pool| {
            sqlx::query_scalar(concat!(
                "SELECT EXISTS (SELECT 1 FROM users WHERE lower(login) = lower($1))
                     OR EXISTS (SELECT 1 FROM repositories r
                                WHERE lower(r.owner) = lower($1) AND ",
                visible_sql!("r", "$2", "$3"),
                ")"
            ))
            .bind(name)
            .bind(&login)
            .bind(user_id)
            .fetch_one(pool)
            .await
        })
        .map_err(DbError::query("find library entity"))
    }

    /// The repositories of `owner` the viewer may read, by name.
    pub async fn library_collections_of(
        &self,
        viewer: &Viewer,
        owner: &str,
    ) -> Result<Vec<Repository>, DbError> {
        let (login, user_id) = visibility_binds(viewer);
        with_pool!(self, |pool| {
            sqlx::query_as(concat!(
                "SELECT r.* FROM repositories r WHERE lower(r.owner) = lower($1) AND ",
                visible_sql!("r", "$2", "$3"),
                " ORDER BY lower(r.name)"
            ))
            .bind(owner)
            .bind(&login)
            .bind(user_id)
            .fetch_all(pool)
            .await
        })
        .map_err(DbError::query("list library collections"))
    }

    /// Adds a collection created by a push: a repository with no GitHub
    /// id, `source = 'push'`. One that exists already is returned as is.
    pub async fn insert_pushed_repository(
        &self,
        owner: &str,
        name: &str,
        now: Timestamp,
    ) -> Result<Repository, DbError> {
        let inserted: Option<Repository> = with_pool!(self, |pool| {
            sqlx::query_as(
                "INSERT INTO repositories (owner, name, default_branch, created_at, source)
                 VALUES ($1, $2, '', $3, 'push')
                 ON CONFLICT DO NOTHING
                 RETURNING *",
            )
            .bind(owner)
            .bind(name)
            .bind(now)
            .fetch_optional(pool)
            .await
        })
        .map_err(DbError::query("insert pushed repository"))?;
        match inserted {
            Some(repository) => Ok(repository),
            None => {
                self.find_repository(owner, name)
                    .await?
                    .ok_or_else(|| DbError::AlreadyExists {
                        what: "repository",
                        key: format!("{owner}/{name}"),
                    })
            }
        }
    }

    /// The containers of a repository, by name.
    pub async fn list_containers(&self, repository_id: i64) -> Result<Vec<Container>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as("SELECT * FROM containers WHERE repository_id = $1 ORDER BY name")
                .bind(repository_id)
                .fetch_all(pool)
                .await
        })
        .map_err(DbError::query("list containers"))
    }

    pub async fn find_container_by_id(&self, id: i64) -> Result<Option<Container>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as("SELECT * FROM containers WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await
        })
        .map_err(DbError::query("find container by id"))
    }

    /// The tags of a container that name an image, by name.
    pub async fn library_tags(&self, container_id: i64) -> Result<Vec<LibraryTag>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT t.name, t.image_id, i.size FROM tags t JOIN images i ON i.id = t.image_id
                 WHERE t.container_id = $1 ORDER BY t.name",
            )
            .bind(container_id)
            .fetch_all(pool)
            .await
        })
        .map_err(DbError::query("list library tags"))
    }

    /// Records an announced image in a container, or returns the one
    /// announced before with the same digest.
    pub async fn upsert_library_upload(
        &self,
        container_id: i64,
        digest: &str,
        description: &str,
        user_id: i64,
        now: Timestamp,
    ) -> Result<LibraryUpload, DbError> {
        super::check_digest(digest)?;
        with_pool!(self, |pool| {
            sqlx::query_as(
                "INSERT INTO library_uploads (container_id, digest, description, user_id,
                     created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $5)
                 ON CONFLICT (container_id, digest) DO UPDATE SET digest = excluded.digest
                 RETURNING *",
            )
            .bind(container_id)
            .bind(digest)
            .bind(description)
            .bind(user_id)
            .bind(now)
            .fetch_one(pool)
            .await
        })
        .map_err(DbError::query("upsert library upload"))
    }

    pub async fn find_library_upload(&self, id: i64) -> Result<Option<LibraryUpload>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as("SELECT * FROM library_uploads WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await
        })
        .map_err(DbError::query("find library upload"))
    }

    /// The announced image of `digest` in a container, if any.
    pub async fn find_library_upload_by_digest(
        &self,
        container_id: i64,
        digest: &str,
    ) -> Result<Option<LibraryUpload>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as("SELECT * FROM library_uploads WHERE container_id = $1 AND digest = $2")
                .bind(container_id)
                .bind(digest)
                .fetch_optional(pool)
                .await
        })
        .map_err(DbError::query("find library upload by digest"))
    }

    /// Starts (again) an upload of `size` bytes with a new secret; parts
    /// of an earlier attempt are forgotten (their objects are the caller's
    /// to delete).
    pub async fn start_library_upload(
        &self,
        id: i64,
        size: u64,
        secret_hash: &str,
        multipart: bool,
        now: Timestamp,
    ) -> Result<LibraryUpload, DbError> {
        let size = super::image_size(size)?;
        with_pool!(self, |pool| async {
            let mut tx = pool.begin_write().await?;
            sqlx::query("DELETE FROM library_upload_parts WHERE upload_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let upload = sqlx::query_as(
                "UPDATE library_uploads SET size = $2, secret_hash = $3, multipart = $4,
                     received = FALSE, updated_at = $5
                 WHERE id = $1 RETURNING *",
            )
            .bind(id)
            .bind(size)
            .bind(secret_hash)
            .bind(multipart)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(upload)
        }
        .await)
        .map_err(DbError::query("start library upload"))
    }

    /// Records a staged part (again: a part sent twice keeps the last).
    pub async fn record_library_part(&self, part: &LibraryUploadPart) -> Result<(), DbError> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO library_upload_parts (upload_id, part_number, size, sha256)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (upload_id, part_number) DO UPDATE SET
                     size = excluded.size, sha256 = excluded.sha256",
            )
            .bind(part.upload_id)
            .bind(part.part_number)
            .bind(part.size)
            .bind(&part.sha256)
            .execute(pool)
            .await
            .map(|_| ())
        })
        .map_err(DbError::query("record library upload part"))
    }

    /// The staged parts of an upload, by number.
    pub async fn library_parts(&self, upload_id: i64) -> Result<Vec<LibraryUploadPart>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT * FROM library_upload_parts WHERE upload_id = $1 ORDER BY part_number",
            )
            .bind(upload_id)
            .fetch_all(pool)
            .await
        })
        .map_err(DbError::query("list library upload parts"))
    }

    /// Notes that the hub received and verified a single upload's bytes.
    pub async fn mark_library_upload_received(
        &self,
        id: i64,
        now: Timestamp,
    ) -> Result<(), DbError> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE library_uploads SET received = TRUE, updated_at = $2 WHERE id = $1")
                .bind(id)
                .bind(now)
                .execute(pool)
                .await
                .map(|_| ())
        })
        .map_err(DbError::query("mark library upload received"))
    }

    /// Ends an upload: forgets its parts and secret, and records the
    /// published image when there is one.
    pub async fn finish_library_upload(
        &self,
        id: i64,
        image_id: Option<i64>,
        now: Timestamp,
    ) -> Result<(), DbError> {
        with_pool!(self, |pool| async {
            let mut tx = pool.begin_write().await?;
            sqlx::query("DELETE FROM library_upload_parts WHERE upload_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE library_uploads SET secret_hash = NULL, multipart = FALSE,
                     received = FALSE, image_id = COALESCE($2, image_id), updated_at = $3
                 WHERE id = $1",
            )
            .bind(id)
            .bind(image_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        }
        .await)
        .map_err(DbError::query("finish library upload"))
    }

    /// Uploads under way (holding a secret) untouched since before
    /// `before`: abandoned by their client, at most `limit`.
    pub async fn stale_library_uploads(
        &self,
        before: Timestamp,
        limit: i64,
    ) -> Result<Vec<LibraryUpload>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT * FROM library_uploads
                 WHERE secret_hash IS NOT NULL AND updated_at < $1
                 ORDER BY updated_at LIMIT $2",
            )
            .bind(before)
            .bind(limit)
            .fetch_all(pool)
            .await
        })
        .map_err(DbError::query("list stale library uploads"))
    }

    /// Repositories the viewer may read whose owner or name contains `value`.
    pub async fn search_collections(
        &self,
        viewer: &Viewer,
        value: &str,
        limit: i64,
    ) -> Result<Vec<Repository>, DbError> {
        let (login, user_id) = visibility_binds(viewer);
        with_pool!(self, |pool| {
            sqlx::query_as(concat!(
                "SELECT r.* FROM repositories r
                 WHERE (lower(r.name) LIKE $1 ESCAPE '\\' OR lower(r.owner) LIKE $1 ESCAPE '\\') AND ",
                visible_sql!("r", "$2", "$3"),
                " ORDER BY lower(r.owner), lower(r.name) LIMIT $4"
            ))
            .bind(like_pattern(value))
            .bind(&login)
            .bind(user_id)
            .bind(limit)
            .fetch_all(pool)
            .await
        })
        .map_err(DbError::query("search collections"))
    }

    /// Containers in repositories the viewer may read whose name contains `value`.
    pub async fn search_containers(
        &self,
        viewer: &Viewer,
        value: &str,
        limit: i64,
    ) -> Result<Vec<FoundContainer>, DbError> {
        let (login, user_id) = visibility_binds(viewer);
        with_pool!(self, |pool| {
            sqlx::query_as(concat!(
                "SELECT c.id, c.name, c.repository_id, r.owner, r.name AS repository, r.private,
                     c.created_at
                 FROM containers c JOIN repositories r ON r.id = c.repository_id
                 WHERE lower(c.name) LIKE $1 ESCAPE '\\' AND ",
                visible_sql!("r", "$2", "$3"),
                " ORDER BY lower(r.owner), lower(r.name), c.name LIMIT $4"
            ))
            .bind(like_pattern(value))
            .bind(&login)
            .bind(user_id)
            .bind(limit)
            .fetch_all(pool)
            .await
        })
        .map_err(DbError::query("search containers"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_match_the_value_literally() {
        assert_eq!(like_pattern("Ana"), "%ana%");
        assert_eq!(like_pattern("a_b%c\\"), "%a\\_b\\%c\\\\%");
    }
}
