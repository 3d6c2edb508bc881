//! Who and what the catalog is about: users, GitHub App installations,
//! repositories (collections), their containers and the recipes that
//! build them.

use sqlx::types::Json;

use super::{is_unique_violation, with_pool, with_tx, Db, DbError, Timestamp, WriteTx};

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
        let action = "upsert github installation";
        let mut tx = self.begin_write().await.map_err(DbError::query(action))?;
        let installation = upsert_installation_in(&mut tx, github_id, account_login, now)
            .await
            .map_err(DbError::query(action))?;
        tx.commit().await?;
        Ok(installation)
    }

    pub async fn find_installation(&self, id: i64) -> Result<Option<Installation>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as("SELECT * FROM github_installations WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await
        })
        .map_err(DbError::query("find github installation"))
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
        let action = "delete github installation";
        let mut tx = self.begin_write().await.map_err(DbError::query(action))?;
        let deleted = delete_installation_in(&mut tx, github_id, now)
            .await
            .map_err(DbError::query(action))?;
        tx.commit().await?;
        Ok(deleted)
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
        let result = async {
            let mut tx = self.begin_write().await?;
            let inserted = insert_repository_in(&mut tx, repo, now).await?;
            Ok::<_, sqlx::Error>((tx, inserted))
        }
        .await;
        match result {
            Ok((tx, inserted)) => {
                tx.commit().await?;
                Ok(inserted)
            }
            Err(e) if is_unique_violation(&e) => Err(DbError::AlreadyExists {
                what: "repository",
                key: format!("{}/{}", repo.owner, repo.name),
            }),
            Err(e) => Err(DbError::query("insert repository")(e)),
        }
    }

    /// Every repository, by `owner/name`.
    pub async fn list_repositories(&self) -> Result<Vec<Repository>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as("SELECT * FROM repositories ORDER BY lower(owner), lower(name)")
                .fetch_all(pool)
                .await
        })
        .map_err(DbError::query("list repositories"))
    }

    /// A repository's recipes, by path.
    pub async fn list_recipes(&self, repository_id: i64) -> Result<Vec<Recipe>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as(select_recipes!("r.repository_id = $1 ORDER BY r.path"))
                .bind(repository_id)
                .fetch_all(pool)
                .await
        })
        .map_err(DbError::query("list recipes"))
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
        let action = "upsert recipe";
        let mut tx = self.begin_write().await.map_err(DbError::query(action))?;
        let recipe = upsert_recipe_in(&mut tx, repository_id, path, container_name, tag, now)
            .await
            .map_err(DbError::query(action))?;
        tx.commit().await?;
        Ok(recipe)
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

/// [`Db::upsert_installation`] inside a caller's transaction.
pub(crate) async fn upsert_installation_in(
    tx: &mut WriteTx,
    github_id: i64,
    account_login: &str,
    now: Timestamp,
) -> Result<Installation, sqlx::Error> {
    with_tx!(tx, |conn| {
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
        .fetch_one(&mut **conn)
        .await
    })
}

/// [`Db::delete_installation`] inside a caller's transaction.
pub(crate) async fn delete_installation_in(
    tx: &mut WriteTx,
    github_id: i64,
    now: Timestamp,
) -> Result<bool, sqlx::Error> {
    with_tx!(tx, |conn| {
        let deleted = sqlx::query(
            "UPDATE github_installations SET deleted_at = $2
             WHERE github_id = $1 AND deleted_at IS NULL",
        )
        .bind(github_id)
        .bind(now)
        .execute(&mut **conn)
        .await?
        .rows_affected();
        sqlx::query(
            "UPDATE repositories SET installation_id = NULL
             WHERE installation_id = (SELECT id FROM github_installations WHERE github_id = $1)",
        )
        .bind(github_id)
        .execute(&mut **conn)
        .await?;
        Ok(deleted > 0)
    })
}

/// [`Db::insert_repository`] inside a caller's transaction; a repository
/// that exists fails with a unique violation.
pub(crate) async fn insert_repository_in(
    tx: &mut WriteTx,
    repo: &NewRepository,
    now: Timestamp,
) -> Result<Repository, sqlx::Error> {
    with_tx!(tx, |conn| {
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
        .fetch_one(&mut **conn)
        .await
    })
}

/// Puts the repository with GitHub id `github_id` (or, not yet known by
/// id, named `owner/name`) under the installation with internal id
/// `installation_id`, learning its GitHub id; `None` when there is none.
pub(crate) async fn attach_repository_in(
    tx: &mut WriteTx,
    github_id: i64,
    owner: &str,
    name: &str,
    installation_id: i64,
) -> Result<Option<Repository>, sqlx::Error> {
    with_tx!(tx, |conn| {
        sqlx::query_as(
            "UPDATE repositories SET installation_id = $4, github_id = $1
             WHERE github_id = $1
                OR (github_id IS NULL AND lower(owner) = lower($2) AND lower(name) = lower($3))
             RETURNING *",
        )
        .bind(github_id)
        .bind(owner)
        .bind(name)
        .bind(installation_id)
        .fetch_optional(&mut **conn)
        .await
    })
}

/// Takes the repository with GitHub id `github_id` away from its
/// installation (it stays in the catalog and builds nothing); false when
/// there was none attached.
pub(crate) async fn detach_repository_in(
    tx: &mut WriteTx,
    github_id: i64,
) -> Result<bool, sqlx::Error> {
    with_tx!(tx, |conn| {
        sqlx::query(
            "UPDATE repositories SET installation_id = NULL
             WHERE github_id = $1 AND installation_id IS NOT NULL",
        )
        .bind(github_id)
        .execute(&mut **conn)
        .await
        .map(|done| done.rows_affected() > 0)
    })
}

/// Records the default branch GitHub reports (an App installation's
/// repository list does not say it, so pushes correct it).
pub(crate) async fn set_default_branch_in(
    tx: &mut WriteTx,
    repository_id: i64,
    default_branch: &str,
) -> Result<(), sqlx::Error> {
    with_tx!(tx, |conn| {
        sqlx::query("UPDATE repositories SET default_branch = $2 WHERE id = $1")
            .bind(repository_id)
            .bind(default_branch)
            .execute(&mut **conn)
            .await
            .map(|_| ())
    })
}

/// How many recipes the repository has.
pub(crate) async fn count_recipes_in(
    tx: &mut WriteTx,
    repository_id: i64,
) -> Result<i64, sqlx::Error> {
    with_tx!(tx, |conn| {
        sqlx::query_scalar("SELECT COUNT(*) FROM recipes WHERE repository_id = $1")
            .bind(repository_id)
            .fetch_one(&mut **conn)
            .await
    })
}

/// The recipe building `container_name:tag` in the repository, if any.
pub(crate) async fn find_recipe_for_target_in(
    tx: &mut WriteTx,
    repository_id: i64,
    container_name: &str,
    tag: &str,
) -> Result<Option<Recipe>, sqlx::Error> {
    with_tx!(tx, |conn| {
        sqlx::query_as(select_recipes!(
            "r.repository_id = $1 AND c.name = $2 AND r.tag = $3"
        ))
        .bind(repository_id)
        .bind(container_name)
        .bind(tag)
        .fetch_optional(&mut **conn)
        .await
    })
}

/// [`Db::upsert_recipe`] inside a caller's transaction.
pub(crate) async fn upsert_recipe_in(
    tx: &mut WriteTx,
    repository_id: i64,
    path: &str,
    container_name: &str,
    tag: &str,
    now: Timestamp,
) -> Result<Recipe, sqlx::Error> {
    with_tx!(tx, |conn| {
        let container: Container = sqlx::query_as(UPSERT_CONTAINER)
            .bind(repository_id)
            .bind(container_name)
            .bind(now)
            .fetch_one(&mut **conn)
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
        .fetch_one(&mut **conn)
        .await?;
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
    })
}

/// Gives the recipe `id` a new path (its file was renamed or moved), keeping
/// its container, tag and build history.
pub(crate) async fn move_recipe_in(
    tx: &mut WriteTx,
    id: i64,
    path: &str,
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    with_tx!(tx, |conn| {
        sqlx::query("UPDATE recipes SET path = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(path)
            .bind(now)
            .execute(&mut **conn)
            .await
            .map(|_| ())
    })
}
