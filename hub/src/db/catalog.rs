//! Who and what the catalog is about: users, GitHub App installations,
//! repositories (collections), their containers and the recipes that
//! build them.

use sqlx::types::Json;

use super::{is_unique_violation, with_pool, BeginWrite as _, Db, DbError, Timestamp};

/// Someone who logged in with GitHub.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct User {
    pub id: i64,
    pub github_id: i64,
    pub login: String,
    pub name: Option<String>,
    pub avatar_url: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A user as GitHub describes them at login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    pub github_id: i64,
    pub login: String,
    pub name: Option<String>,
    pub avatar_url: Option<String>,
}

/// A GitHub App installation on an account.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Installation {
    pub id: i64,
    pub github_id: i64,
    pub account_login: String,
    pub created_at: Timestamp,
    /// When the App was uninstalled; the row stays for the audit trail.
    pub deleted_at: Option<Timestamp>,
}

/// A repository the hub builds: a collection in the catalog.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Repository {
    pub id: i64,
    /// NULL until the hub learns it (a repository added by name in plain mode).
    pub github_id: Option<i64>,
    pub owner: String,
    pub name: String,
    pub default_branch: String,
    /// Branches whose pushes build; empty means the default branch only.
    #[sqlx(json)]
    pub build_branches: Vec<String>,
    pub private: bool,
    pub paused: bool,
    /// The secret of a plain (non-App) webhook; NULL under the GitHub App.
    pub webhook_secret: Option<String>,
    /// The installation granting access; NULL in plain webhook mode.
    pub installation_id: Option<i64>,
    pub created_at: Timestamp,
}

// By hand, so the webhook secret never reaches a log line.
impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("id", &self.id)
            .field("github_id", &self.github_id)
            .field("owner", &self.owner)
            .field("name", &self.name)
            .field("default_branch", &self.default_branch)
            .field("build_branches", &self.build_branches)
            .field("private", &self.private)
            .field("paused", &self.paused)
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "***"),
            )
            .field("installation_id", &self.installation_id)
            .field("created_at", &self.created_at)
            .finish()
    }
}

impl Repository {
    /// `owner/name`.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    /// Whether a push to `branch` builds.
    pub fn builds_branch(&self, branch: &str) -> bool {
        if self.build_branches.is_empty() {
            branch == self.default_branch
        } else {
            self.build_branches.iter().any(|b| b == branch)
        }
    }
}

/// What an owner can change about a repository.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepositorySettings {
    /// Empty: the default branch only.
    pub build_branches: Vec<String>,
    pub private: bool,
    pub paused: bool,
    pub webhook_secret: Option<String>,
}

/// A repository to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRepository {
    pub github_id: Option<i64>,
    pub owner: String,
    pub name: String,
    pub default_branch: String,
    pub installation_id: Option<i64>,
    pub settings: RepositorySettings,
}

/// A container of a collection: what one recipe folder builds.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Container {
    pub id: i64,
    pub repository_id: i64,
    pub name: String,
    pub created_at: Timestamp,
}

/// A recipe file in a repository and the container and tag it builds.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Recipe {
    pub id: i64,
    pub repository_id: i64,
    /// Path in the repository, `/`-separated, e.g. `envs/tools/Singularity.v2`.
    pub path: String,
    pub container_id: i64,
    pub container_name: String,
    pub tag: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// `SELECT … FROM` recipes joined with their container, as [`Recipe`] reads it.
macro_rules! select_recipes {
    ($where:literal) => {
        concat!(
            "SELECT r.id, r.repository_id, r.path, r.container_id, c.name AS container_name,
                 r.tag, r.created_at, r.updated_at
             FROM recipes r JOIN containers c ON c.id = r.container_id WHERE ",
            $where
        )
    };
}

/// Creates a container or, on conflict, returns the existing one: the
/// no-op update makes `RETURNING` give the existing row too.
const UPSERT_CONTAINER: &str =
    "INSERT INTO containers (repository_id, name, created_at) VALUES ($1, $2, $3)
     ON CONFLICT (repository_id, name) DO UPDATE SET name = excluded.name
     RETURNING *";

impl Db {
    /// Creates the user, or refreshes login, name and avatar when GitHub's
    /// id is known (logins can be renamed; the id cannot).
    pub async fn upsert_user(&self, user: &NewUser, now: Timestamp) -> Result<User, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as(
                "INSERT INTO users (github_id, login, name, avatar_url, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $5)
                 ON CONFLICT (github_id) DO UPDATE SET login = excluded.login,
                     name = excluded.name, avatar_url = excluded.avatar_url,
                     updated_at = excluded.updated_at
                 RETURNING *",
            )
            .bind(user.github_id)
            .bind(&user.login)
            .bind(&user.name)
            .bind(&user.avatar_url)
            .bind(now)
            .fetch_one(pool)
            .await
        })
        .map_err(DbError::query("upsert user"))
    }

    pub async fn find_user_by_github_id(&self, github_id: i64) -> Result<Option<User>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as("SELECT * FROM users WHERE github_id = $1")
                .bind(github_id)
                .fetch_optional(pool)
                .await
        })
        .map_err(DbError::query("find user by github id"))
    }

    /// Records an installation (again: a reinstall clears `deleted_at`).
    pub async fn upsert_installation(
        &self,
        github_id: i64,
        account_login: &str,
        now: Timestamp,
    ) -> Result<Installation, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as(
                "INSERT INTO github_installations (github_id, account_login, created_at)
                 VALUES ($1, $2, $3)
                 ON CONFLICT (github_id) DO UPDATE SET account_login = excluded.account_login,
                     deleted_at = NULL
                 RETURNING *",
            )
            .bind(github_id)
            .bind(account_login)
            .bind(now)
            .fetch_one(pool)
            .await
        })
        .map_err(DbError::query("upsert github installation"))
    }

    pub async fn find_installation_by_github_id(
        &self,
        github_id: i64,
    ) -> Result<Option<Installation>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as("SELECT * FROM github_installations WHERE github_id = $1")
                .bind(github_id)
                .fetch_optional(pool)
                .await
        })
        .map_err(DbError::query("find github installation"))
    }

    /// Marks an installation deleted and detaches its repositories, which
    /// then build nothing until reinstalled or switched to plain mode.
    pub async fn delete_installation(
        &self,
        github_id: i64,
        now: Timestamp,
    ) -> Result<bool, DbError> {
        with_pool!(self, |pool| async {
            let mut tx = pool.begin_write().await?;
            let deleted = sqlx::query(
                "UPDATE github_installations SET deleted_at = $2
                 WHERE github_id = $1 AND deleted_at IS NULL",
            )
            .bind(github_id)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query(
                "UPDATE repositories SET installation_id = NULL
                 WHERE installation_id = (SELECT id FROM github_installations WHERE github_id = $1)",
            )
            .bind(github_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(deleted > 0)
        }
        .await)
        .map_err(DbError::query("delete github installation"))
    }

    /// GitHub's id of the installation with our id `id` (what GitHub
    /// calls take); `None` when there is no such installation.
    pub async fn installation_github_id(&self, id: i64) -> Result<Option<i64>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT github_id FROM github_installations WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await
        })
        .map_err(DbError::query("find github installation"))
    }

    /// Adds a repository; one that exists (same `owner/name`, any case, or
    /// same GitHub id) is [`DbError::AlreadyExists`].
    pub async fn insert_repository(
        &self,
        repo: &NewRepository,
        now: Timestamp,
    ) -> Result<Repository, DbError> {
        let result = with_pool!(self, |pool| {
            sqlx::query_as(
                "INSERT INTO repositories (github_id, owner, name, default_branch, build_branches,
                     private, paused, webhook_secret, installation_id, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 RETURNING *",
            )
            .bind(repo.github_id)
            .bind(&repo.owner)
            .bind(&repo.name)
            .bind(&repo.default_branch)
            .bind(Json(&repo.settings.build_branches))
            .bind(repo.settings.private)
            .bind(repo.settings.paused)
            .bind(&repo.settings.webhook_secret)
            .bind(repo.installation_id)
            .bind(now)
            .fetch_one(pool)
            .await
        });
        result.map_err(|e| {
            if is_unique_violation(&e) {
                DbError::AlreadyExists {
                    what: "repository",
                    key: format!("{}/{}", repo.owner, repo.name),
                }
            } else {
                DbError::query("insert repository")(e)
            }
        })
    }

    /// The repository `owner/name`, compared without case as GitHub does.
    pub async fn find_repository(
        &self,
        owner: &str,
        name: &str,
    ) -> Result<Option<Repository>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT * FROM repositories WHERE lower(owner) = lower($1) AND lower(name) = lower($2)",
            )
            .bind(owner)
            .bind(name)
            .fetch_optional(pool)
            .await
        })
        .map_err(DbError::query("find repository by name"))
    }

    pub async fn find_repository_by_github_id(
        &self,
        github_id: i64,
    ) -> Result<Option<Repository>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as("SELECT * FROM repositories WHERE github_id = $1")
                .bind(github_id)
                .fetch_optional(pool)
                .await
        })
        .map_err(DbError::query("find repository by github id"))
    }

    pub async fn find_repository_by_id(&self, id: i64) -> Result<Option<Repository>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as("SELECT * FROM repositories WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await
        })
        .map_err(DbError::query("find repository by id"))
    }

    /// Replaces a repository's settings; `None` when there is no such repository.
    pub async fn update_repository_settings(
        &self,
        id: i64,
        settings: &RepositorySettings,
    ) -> Result<Option<Repository>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as(
                "UPDATE repositories SET build_branches = $2, private = $3, paused = $4,
                     webhook_secret = $5
                 WHERE id = $1
                 RETURNING *",
            )
            .bind(id)
            .bind(Json(&settings.build_branches))
            .bind(settings.private)
            .bind(settings.paused)
            .bind(&settings.webhook_secret)
            .fetch_optional(pool)
            .await
        })
        .map_err(DbError::query("update repository settings"))
    }

    /// Records the recipe at `path` building `container_name:tag`, creating
    /// the container when new. Calling it again with the same values
    /// changes nothing; with others (a renamed folder's recipe moved to a
    /// new container) it updates the recipe.
    pub async fn upsert_recipe(
        &self,
        repository_id: i64,
        path: &str,
        container_name: &str,
        tag: &str,
        now: Timestamp,
    ) -> Result<Recipe, DbError> {
        with_pool!(self, |pool| async {
            let mut tx = pool.begin_write().await?;
            let container: Container = sqlx::query_as(UPSERT_CONTAINER)
                .bind(repository_id)
                .bind(container_name)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
            let (id, created_at, updated_at): (i64, Timestamp, Timestamp) = sqlx::query_as(
                "INSERT INTO recipes (repository_id, path, container_id, tag, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $5)
                 ON CONFLICT (repository_id, path) DO UPDATE SET
                     container_id = excluded.container_id, tag = excluded.tag,
                     updated_at = CASE
                         WHEN recipes.container_id = excluded.container_id AND recipes.tag = excluded.tag
                         THEN recipes.updated_at ELSE excluded.updated_at END
                 RETURNING id, created_at, updated_at",
            )
            .bind(repository_id)
            .bind(path)
            .bind(container.id)
            .bind(tag)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Recipe {
                id,
                repository_id,
                path: path.to_owned(),
                container_id: container.id,
                container_name: container.name,
                tag: tag.to_owned(),
                created_at,
                updated_at,
            })
        }
        .await)
        .map_err(DbError::query("upsert recipe"))
    }

    pub async fn find_recipe(
        &self,
        repository_id: i64,
        path: &str,
    ) -> Result<Option<Recipe>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as(select_recipes!("r.repository_id = $1 AND r.path = $2"))
                .bind(repository_id)
                .bind(path)
                .fetch_optional(pool)
                .await
        })
        .map_err(DbError::query("find recipe by path"))
    }

    pub async fn find_recipe_by_id(&self, id: i64) -> Result<Option<Recipe>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as(select_recipes!("r.id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await
        })
        .map_err(DbError::query("find recipe by id"))
    }

    /// Creates the container when new; returns it either way.
    pub async fn upsert_container(
        &self,
        repository_id: i64,
        name: &str,
        now: Timestamp,
    ) -> Result<Container, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as(UPSERT_CONTAINER)
                .bind(repository_id)
                .bind(name)
                .bind(now)
                .fetch_one(pool)
                .await
        })
        .map_err(DbError::query("upsert container"))
    }

    pub async fn find_container(
        &self,
        repository_id: i64,
        name: &str,
    ) -> Result<Option<Container>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as("SELECT * FROM containers WHERE repository_id = $1 AND name = $2")
                .bind(repository_id)
                .bind(name)
                .fetch_optional(pool)
                .await
        })
        .map_err(DbError::query("find container"))
    }
}
