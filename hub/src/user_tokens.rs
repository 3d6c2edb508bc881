//! API tokens people use from scripts and clients: issued by the API and
//! `sifhub admin token create`, shown once, stored as a hash with an
//! optional expiry. The owner is a GitHub account; one that never signed
//! in is looked up on GitHub and recorded first.

use std::time::Duration;

use crate::db::{
    hash_token, ApiToken, Db, DbError, NewToken, NewUser, Timestamp, TokenScope, User,
};
use crate::github::{GitHubApi, GitHubError};

/// What user tokens start with, so a leaked one is recognisable (secret
/// scanners, logs).
pub const TOKEN_PREFIX: &str = "sifh_";
/// Longest label a token may carry.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest lifetime a token may be given (ten years).
pub const MAX_EXPIRY_DAYS: u64 = 3650;

#[derive(Debug, thiserror::Error)]
pub enum UserTokenError {
    #[error("cannot read random bytes from /dev/urandom for a token")]
    Random(#[source] std::io::Error),
    #[error("scope {0} is not for people's tokens: use read, push or admin")]
    BadScope(TokenScope),
    #[error("token name must be 1 to {MAX_NAME_CHARS} characters")]
    BadName,
    #[error("expiry must be 1 to {MAX_EXPIRY_DAYS} days")]
    BadExpiry,
    #[error("github has no account {0:?}")]
    UnknownAccount(String),
    #[error("cannot look up github account {login:?}")]
    Lookup {
        login: String,
        #[source]
        source: GitHubError,
    },
    #[error(transparent)]
    Database(#[from] DbError),
}

/// A token to make for a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub name: String,
    pub scope: TokenScope,
    /// Days until it expires; `None` never.
    pub expires_in_days: Option<u64>,
}

impl TokenRequest {
    /// The problem with the request, if any: a worker scope, an empty or
    /// overlong name, a zero or overlong expiry.
    pub fn check(&self) -> Result<(), UserTokenError> {
        if self.scope == TokenScope::Worker {
            return Err(UserTokenError::BadScope(self.scope));
        }
        let chars = self.name.trim().chars().count();
        if chars == 0 || chars > MAX_NAME_CHARS {
            return Err(UserTokenError::BadName);
        }
        if matches!(self.expires_in_days, Some(days) if days == 0 || days > MAX_EXPIRY_DAYS) {
            return Err(UserTokenError::BadExpiry);
        }
        Ok(())
    }
}

/// Makes a token for `user_id`: stores its hash and returns the secret,
/// which exists nowhere else.
pub async fn issue_user_token(
    db: &Db,
    user_id: i64,
    request: &TokenRequest,
    now: Timestamp,
) -> Result<(ApiToken, String), UserTokenError> {
    request.check()?;
    let mut random = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut random))
        .map_err(UserTokenError::Random)?;
    let secret = format!("{TOKEN_PREFIX}{}", hex::encode(random));
    let expires_at = request
        .expires_in_days
        .map(|days| now.plus(Duration::from_secs(days * 24 * 60 * 60)));
    let token = db
        .insert_token(
            &NewToken {
                token_hash: hash_token(&secret),
                user_id: Some(user_id),
                name: request.name.trim().to_owned(),
                scope: request.scope,
                expires_at,
            },
            now,
        )
        .await?;
    Ok((token, secret))
}

/// The user `login` names: one who signed in, else the GitHub account of
/// that name, recorded now. Unknown to GitHub too: an error, nothing stored.
pub async fn find_or_fetch_user(
    db: &Db,
    github: &dyn GitHubApi,
    login: &str,
    now: Timestamp,
) -> Result<User, UserTokenError> {
    if let Some(user) = db.find_user_by_login(login).await? {
        return Ok(user);
    }
    let account = github
        .user(login)
        .await
        .map_err(|source| UserTokenError::Lookup {
            login: login.to_owned(),
            source,
        })?
        .ok_or_else(|| UserTokenError::UnknownAccount(login.to_owned()))?;
    let user = db
        .upsert_user(
            &NewUser {
                github_id: account.github_id,
                login: account.login,
                name: account.name,
                avatar_url: account.avatar_url,
            },
            now,
        )
        .await?;
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked() {
        let good = TokenRequest {
            name: "laptop".to_owned(),
            scope: TokenScope::Read,
            expires_in_days: Some(30),
        };
        assert!(good.check().is_ok());
        let bad = [
            TokenRequest {
                scope: TokenScope::Worker,
                ..good.clone()
            },
            TokenRequest {
                name: "  ".to_owned(),
                ..good.clone()
            },
            TokenRequest {
                name: "x".repeat(MAX_NAME_CHARS + 1),
                ..good.clone()
            },
            TokenRequest {
                expires_in_days: Some(0),
                ..good.clone()
            },
            TokenRequest {
                expires_in_days: Some(MAX_EXPIRY_DAYS + 1),
                ..good.clone()
            },
        ];
        for request in bad {
            assert!(request.check().is_err(), "{request:?}");
        }
    }
}
