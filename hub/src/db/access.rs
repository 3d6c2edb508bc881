//! Who may see and change what: sign-in sessions, repository members as
//! GitHub reports them, and the visibility rule every lookup applies.
//!
//! The rule: a public repository is readable by everyone; a private one by
//! its owner (the login matches) and its members; everyone else is told it
//! does not exist. A token's scope caps what its user may do.

use super::{text_enum, with_pool, with_tx, Db, DbError, Image, Repository, Timestamp, User};
use crate::access::{Via, Viewer};
use crate::db::TokenScope;

text_enum! {
    /// What a user may do to a repository.
    #[derive(PartialOrd, Ord)]
    pub enum Permission {
        /// See it, also when private, and pull its images.
        Read = "read",
        /// Also push images and trigger builds.
        Write = "write",
        /// Also change its settings and connect or disconnect it.
        Admin = "admin",
    }
}

/// A signed-in browser session (its secret's hash, never the secret).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Session {
    pub id: i64,
    pub token_hash: String,
    pub user_id: i64,
    /// The token every form of this session carries.
    pub csrf_token: String,
    /// The user's GitHub OAuth token, to list their repositories.
    pub github_token: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// The SQL condition "the viewer may read repository `$alias`", given the
/// placeholders binding the viewer's login (`""` for nobody) and user id
/// (`-1` for nobody). A `concat!`-able literal, so queries stay `'static`.
macro_rules! visible_sql {
    ($alias:literal, $login:literal, $user:literal) => {
        concat!(
            "(NOT ",
            $alias,
            ".private OR lower(",
            $alias,
            ".owner) = lower(",
            $login,
            ")
              OR EXISTS (SELECT 1 FROM repository_members m
                         WHERE m.repository_id = ",
            $alias,
            ".id AND m.user_id = ",
            $user,
            "))"
        )
    };
}
pub(crate) use visible_sql;

/// The binds of [`visible_sql!`]: the viewer's login and user id.
pub(crate) fn visibility_binds(viewer: &Viewer) -> (String, i64) {
    (
        viewer.login().unwrap_or_default().to_owned(),
        viewer.user_id().unwrap_or(-1),
    )
}

/// The most a credential lets its user do, whatever their permission.
fn scope_cap(via: Via) -> Option<Permission> {
    match via {
        Via::Anonymous => None,
        Via::Session => Some(Permission::Admin),
        Via::Token { scope, .. } => match scope {
            TokenScope::Read => Some(Permission::Read),
            TokenScope::Push => Some(Permission::Write),
            TokenScope::Admin => Some(Permission::Admin),
            // A worker runs untrusted builds: its token reads nothing private.
            TokenScope::Worker => None,
        },
    }
}

impl Db {
    /// What `viewer` may do to `repo`; `None`: nothing, and a private
    /// repository is then to be treated as missing.
    pub async fn permission(
        &self,
        viewer: &Viewer,
        repo: &Repository,
    ) -> Result<Option<Permission>, DbError> {
        let public = (!repo.private).then_some(Permission::Read);
        let Some(user) = &viewer.user else {
            return Ok(public);
        };
        let held = if user.login.eq_ignore_ascii_case(&repo.owner) {
            Some(Permission::Admin)
        } else {
            let stored: Option<Permission> = with_pool!(self, |pool| {
                sqlx::query_scalar(
                    "SELECT permission FROM repository_members
                     WHERE repository_id = $1 AND user_id = $2",
                )
                .bind(repo.id)
                .bind(user.id)
                .fetch_optional(pool)
                .await
            })
            .map_err(DbError::query("read repository permission"))?;
            stored
        };
        let capped = held
            .zip(scope_cap(viewer.via))
            .map(|(held, cap)| held.min(cap));
        Ok(capped.max(public))
    }

    /// The repository `owner/name` when `viewer` may read it; a private
    /// one they may not read is `None`, like a missing one.
    pub async fn readable_repository(
        &self,
        viewer: &Viewer,
        owner: &str,
        name: &str,
    ) -> Result<Option<Repository>, DbError> {
        let Some(repo) = self.find_repository(owner, name).await? else {
            return Ok(None);
        };
        Ok(self.permission(viewer, &repo).await?.map(|_| repo))
    }

    /// The image `owner/repo/container:tag` names now, when `viewer` may
    /// read the repository. `owner` and `repo` compare without case.
    pub async fn find_readable_tagged_image(
        &self,
        viewer: &Viewer,
        owner: &str,
        repo: &str,
        container: &str,
        tag: &str,
    ) -> Result<Option<Image>, DbError> {
        let (login, user_id) = visibility_binds(viewer);
        with_pool!(self, |pool| {
            sqlx::query_as(concat!(
                "SELECT i.* FROM repositories r
                 JOIN containers c ON c.repository_id = r.id
                 JOIN tags t ON t.container_id = c.id
                 JOIN images i ON i.id = t.image_id
                 WHERE lower(r.owner) = lower($1) AND lower(r.name) = lower($2)
                   AND c.name = $3 AND t.name = $4 AND ",
                visible_sql!("r", "$5", "$6")
            ))
            .bind(owner)
            .bind(repo)
            .bind(container)
            .bind(tag)
            .bind(&login)
            .bind(user_id)
            .fetch_optional(pool)
            .await
        })
        .map_err(DbError::query("find readable tagged image"))
    }

    /// The image with `digest` (`sha256:<hex>`), when a repository `viewer`
    /// may read built it or one of its tags has ever named it.
    pub async fn find_readable_image_by_digest(
        &self,
        viewer: &Viewer,
        digest: &str,
    ) -> Result<Option<Image>, DbError> {
        let (login, user_id) = visibility_binds(viewer);
        with_pool!(self, |pool| {
            sqlx::query_as(concat!(
                "SELECT i.* FROM images i
                 WHERE i.digest = $1 AND (
                     EXISTS (SELECT 1 FROM repositories r
                             WHERE r.id = i.repository_id AND ",
                visible_sql!("r", "$2", "$3"),
                ")
                     OR EXISTS (SELECT 1 FROM tag_history h
                                JOIN tags t ON t.id = h.tag_id
                                JOIN containers c ON c.id = t.container_id
                                JOIN repositories r ON r.id = c.repository_id
                                WHERE h.image_id = i.id AND ",
                visible_sql!("r", "$2", "$3"),
                "))"
            ))
            .bind(digest)
            .bind(&login)
            .bind(user_id)
            .fetch_optional(pool)
            .await
        })
        .map_err(DbError::query("find readable image by digest"))
    }

    pub async fn find_user_by_login(&self, login: &str) -> Result<Option<User>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as("SELECT * FROM users WHERE lower(login) = lower($1)")
                .bind(login)
                .fetch_optional(pool)
                .await
        })
        .map_err(DbError::query("find user by login"))
    }

    pub async fn find_user(&self, id: i64) -> Result<Option<User>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as("SELECT * FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await
        })
        .map_err(DbError::query("find user"))
    }

    pub async fn insert_session(
        &self,
        token_hash: &str,
        user_id: i64,
        csrf_token: &str,
        github_token: Option<&str>,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<Session, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as(
                "INSERT INTO sessions (token_hash, user_id, csrf_token, github_token,
                                       created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
            )
            .bind(token_hash)
            .bind(user_id)
            .bind(csrf_token)
            .bind(github_token)
            .bind(now)
            .bind(expires_at)
            .fetch_one(pool)
            .await
        })
        .map_err(DbError::query("insert session"))
    }

    /// The session whose secret hashes to `token_hash`, unless it expired.
    pub async fn find_session(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> Result<Option<Session>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as("SELECT * FROM sessions WHERE token_hash = $1 AND expires_at > $2")
                .bind(token_hash)
                .bind(now)
                .fetch_optional(pool)
                .await
        })
        .map_err(DbError::query("find session"))
    }

    pub async fn delete_session(&self, token_hash: &str) -> Result<(), DbError> {
        with_pool!(self, |pool| {
            sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
                .bind(token_hash)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })
        .map_err(DbError::query("delete session"))?;
        Ok(())
    }

    /// Replaces the user's memberships with `memberships` (repository id,
    /// permission), as GitHub reported them at `now`.
    pub async fn set_memberships(
        &self,
        user_id: i64,
        memberships: &[(i64, Permission)],
        now: Timestamp,
    ) -> Result<(), DbError> {
        let action = "set repository memberships";
        let mut tx = self.begin_write().await.map_err(DbError::query(action))?;
        with_tx!(tx, |conn| {
            sqlx::query("DELETE FROM repository_members WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut **conn)
                .await
                .map_err(DbError::query(action))?;
            for (repository_id, permission) in memberships {
                sqlx::query(
                    "INSERT INTO repository_members (repository_id, user_id, permission, refreshed_at)
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(repository_id)
                .bind(user_id)
                .bind(permission)
                .bind(now)
                .execute(&mut **conn)
                .await
                .map_err(DbError::query(action))?;
            }
        });
        tx.commit().await
    }
}
