//! API tokens. Only the sha256 of a token's secret is stored: a leaked
//! database does not leak usable tokens, and a request's token is found
//! by hashing it and looking the hash up.

use sha2::{Digest as _, Sha256};

use super::{text_enum, with_pool, Db, DbError, Timestamp};

text_enum! {
    /// What a token may do.
    pub enum TokenScope {
        /// Read private collections the owner can read.
        Read = "read",
        /// Read, and push images or trigger builds.
        Push = "push",
        /// Everything, including settings, other users' tokens and the
        /// worker protocol.
        Admin = "admin",
        /// The worker protocol only (claim, heartbeat, logs, results): a
        /// worker runs untrusted builds, so its token grants nothing else.
        Worker = "worker",
    }
}

impl TokenScope {
    /// Whether a token of this scope may do what `needed` allows.
    pub fn allows(self, needed: TokenScope) -> bool {
        match (self, needed) {
            (TokenScope::Admin, _) => true,
            (TokenScope::Push, TokenScope::Read | TokenScope::Push) => true,
            (have, needed) => have == needed,
        }
    }
}

/// A stored token (its hash, never its secret).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiToken {
    pub id: i64,
    /// Hex sha256 of the secret; see [`hash_token`].
    pub token_hash: String,
    /// The owner; NULL for tokens the hub issues to itself.
    pub user_id: Option<i64>,
    /// A label for the owner's token list, e.g. `laptop`.
    pub name: String,
    pub scope: TokenScope,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
}

/// A token to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    /// [`hash_token`] of the secret handed to the owner.
    pub token_hash: String,
    pub user_id: Option<i64>,
    pub name: String,
    pub scope: TokenScope,
    pub expires_at: Option<Timestamp>,
}

/// The stored form of a token secret: its sha256, lowercase hex. The
/// secrets are long random strings, so a plain hash suffices (no salt or
/// slow hash: there is no password to guess).
pub fn hash_token(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

impl Db {
    pub async fn insert_token(
        &self,
        token: &NewToken,
        now: Timestamp,
    ) -> Result<ApiToken, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as(
                "INSERT INTO api_tokens (token_hash, user_id, name, scope, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 RETURNING *",
            )
            .bind(&token.token_hash)
            .bind(token.user_id)
            .bind(&token.name)
            .bind(token.scope)
            .bind(now)
            .bind(token.expires_at)
            .fetch_one(pool)
            .await
        })
        .map_err(DbError::query("insert api token"))
    }

    /// The token with this hash if it is usable at `now`: neither revoked
    /// nor expired. An unusable token is `None`, as an unknown one is.
    pub async fn find_token_by_hash(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> Result<Option<ApiToken>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT * FROM api_tokens
                 WHERE token_hash = $1 AND revoked_at IS NULL
                     AND (expires_at IS NULL OR expires_at > $2)",
            )
            .bind(token_hash)
            .bind(now)
            .fetch_optional(pool)
            .await
        })
        .map_err(DbError::query("find api token"))
    }

    /// Revokes a token; false when there is no such token or it was revoked already.
    pub async fn revoke_token(&self, id: i64, now: Timestamp) -> Result<bool, DbError> {
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
            )
            .bind(id)
            .bind(now)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })
        .map(|rows| rows > 0)
        .map_err(DbError::query("revoke api token"))
    }

    /// Notes that a token was used (shown in the owner's token list).
    pub async fn mark_token_used(&self, id: i64, now: Timestamp) -> Result<(), DbError> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE api_tokens SET last_used_at = $2 WHERE id = $1")
                .bind(id)
                .bind(now)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })
        .map(|_| ())
        .map_err(DbError::query("mark api token used"))
    }

    /// The tokens of a user, newest first, revoked and expired included.
    pub async fn list_user_tokens(&self, user_id: i64) -> Result<Vec<ApiToken>, DbError> {
        with_pool!(self, |pool| {
            sqlx::query_as("SELECT * FROM api_tokens WHERE user_id = $1 ORDER BY id DESC")
                .bind(user_id)
                .fetch_all(pool)
                .await
        })
        .map_err(DbError::query("list api tokens"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_nest_and_worker_stands_apart() {
        assert!(TokenScope::Admin.allows(TokenScope::Push));
        assert!(TokenScope::Push.allows(TokenScope::Read));
        assert!(!TokenScope::Read.allows(TokenScope::Push));
        assert!(TokenScope::Admin.allows(TokenScope::Worker));
        assert!(!TokenScope::Push.allows(TokenScope::Worker));
        assert!(!TokenScope::Worker.allows(TokenScope::Read));
        assert_eq!("push".parse::<TokenScope>().unwrap(), TokenScope::Push);
        assert!("root".parse::<TokenScope>().is_err());
    }

    #[test]
    fn token_hash_is_hex_sha256() {
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
