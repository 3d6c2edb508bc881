//! Who is asking: nobody, a browser signed in with GitHub, or an API token.
//!
//! Every API and page takes a [`Viewer`] and asks the database what that
//! viewer may see (`Db::permission`, `Db::readable_repository`, the
//! `find_readable_*` lookups), so one rule decides visibility everywhere.

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;

use crate::db::{hash_token, DbError, Session, TokenScope, User};
use crate::serve::AppState;

/// The cookie holding a browser session's secret.
pub const SESSION_COOKIE: &str = "sifhub_session";
/// How stale a token's `last_used_at` may get before a request refreshes
/// it: one write per token per minute, not one per request.
const LAST_USED_RESOLUTION: Duration = Duration::from_secs(60);

/// Who is asking.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Viewer {
    /// `None` for anonymous requests and for the hub's own tokens.
    pub user: Option<ViewerUser>,
    pub via: Via,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewerUser {
    pub id: i64,
    pub login: String,
}

/// The credential a request came with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Via {
    #[default]
    Anonymous,
    /// A browser session: everything its user may do.
    Session,
    /// An API token: what its scope allows of what its user may do.
    Token { id: i64, scope: TokenScope },
}

impl Viewer {
    pub fn anonymous() -> Self {
        Self::default()
    }

    pub fn user_id(&self) -> Option<i64> {
        self.user.as_ref().map(|user| user.id)
    }

    pub fn login(&self) -> Option<&str> {
        self.user.as_ref().map(|user| user.login.as_str())
    }

    /// Whether the credential allows what `needed` names: sessions
    /// everything their user may do, tokens what their scope allows,
    /// anonymous requests nothing beyond public reads.
    pub fn allows(&self, needed: TokenScope) -> bool {
        match self.via {
            Via::Anonymous => false,
            Via::Session => needed != TokenScope::Worker,
            Via::Token { scope, .. } => scope.allows(needed),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// Credentials were sent but are not (or no longer) valid.
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    #[error(transparent)]
    Database(#[from] DbError),
}

#[derive(serde::Serialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(serde::Serialize)]
struct ErrorDetail {
    code: u16,
    message: String,
}

impl IntoResponse for AccessError {
    fn into_response(self) -> Response {
        let status = match &self {
            AccessError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AccessError::Database(_) => {
                tracing::error!("access: {}", crate::error_chain(&self));
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let message = match &self {
            AccessError::Unauthorized(_) => self.to_string(),
            AccessError::Database(_) => "internal error".to_owned(),
        };
        let mut response = (
            status,
            Json(ErrorBody {
                error: ErrorDetail {
                    code: status.as_u16(),
                    message,
                },
            }),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The secret of an `Authorization: Bearer <token>` header, or the
/// password of a `Basic` one (clients that only speak Basic send the token
/// there, with any user name).
pub fn authorization_secret(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let secret = if scheme.eq_ignore_ascii_case("bearer") {
        rest.trim().to_owned()
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        text.split_once(':')?.1.to_owned()
    } else {
        return None;
    };
    (!secret.is_empty()).then_some(secret)
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
        .filter(|value| !value.is_empty())
}

/// The viewer the request's credentials name: a token in `Authorization`
/// first, then the session cookie, else anonymous. A token that is
/// unknown, expired or revoked is an error, not anonymity: a client that
/// sent one wants to hear that it no longer works.
pub async fn viewer_of(state: &AppState, headers: &HeaderMap) -> Result<Viewer, AccessError> {
    let now = state.queue.now();
    if let Some(secret) = authorization_secret(headers) {
        let token = state
            .db
            .find_token_by_hash(&hash_token(&secret), now)
            .await?
            .ok_or(AccessError::Unauthorized(
                "the token is unknown, expired or revoked",
            ))?;
        if token
            .last_used_at
            .is_none_or(|used| used < now.minus(LAST_USED_RESOLUTION))
        {
            state.db.mark_token_used(token.id, now).await?;
        }
        let user = match token.user_id {
            Some(id) => state.db.find_user(id).await?.map(|user| ViewerUser {
                id: user.id,
                login: user.login,
            }),
            None => None,
        };
        return Ok(Viewer {
            user,
            via: Via::Token {
                id: token.id,
                scope: token.scope,
            },
        });
    }
    // An expired or unknown session is a signed-out browser, not an error:
    // pages then offer to sign in again.
    if let Some(signed_in) = signed_in(state, headers).await? {
        return Ok(Viewer {
            user: Some(ViewerUser {
                id: signed_in.user.id,
                login: signed_in.user.login,
            }),
            via: Via::Session,
        });
    }
    Ok(Viewer::anonymous())
}

/// A browser's live session and its user.
#[derive(Debug, Clone)]
pub struct SignedInSession {
    /// The hash of the cookie's secret: the session's key.
    pub token_hash: String,
    pub session: Session,
    pub user: User,
}

/// The session the request's session cookie names; `None` without a
/// cookie, or when its session is unknown or expired or its user gone.
pub async fn signed_in(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<SignedInSession>, DbError> {
    let Some(secret) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let token_hash = hash_token(&secret);
    let Some(session) = state
        .db
        .find_session(&token_hash, state.queue.now())
        .await?
    else {
        return Ok(None);
    };
    let Some(user) = state.db.find_user(session.user_id).await? else {
        return Ok(None);
    };
    Ok(Some(SignedInSession {
        token_hash,
        session,
        user,
    }))
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = AccessError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        viewer_of(state, &parts.headers).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn secrets_come_from_bearer_or_basic_passwords() {
        let bearer = headers(&[(header::AUTHORIZATION, "Bearer abc")]);
        assert_eq!(authorization_secret(&bearer).as_deref(), Some("abc"));
        // "user:tok:en" → the password keeps its colons.
        let basic = headers(&[(header::AUTHORIZATION, "Basic dXNlcjp0b2s6ZW4=")]);
        assert_eq!(authorization_secret(&basic).as_deref(), Some("tok:en"));
        let empty = headers(&[(header::AUTHORIZATION, "Bearer ")]);
        assert_eq!(authorization_secret(&empty), None);
        let other = headers(&[(header::AUTHORIZATION, "Digest x")]);
        assert_eq!(authorization_secret(&other), None);
    }

    #[test]
    fn cookies_are_found_among_several_headers() {
        let map = headers(&[
            (header::COOKIE, "a=1; sifhub_session=s3cret"),
            (header::COOKIE, "b=2"),
        ]);
        assert_eq!(cookie(&map, SESSION_COOKIE).as_deref(), Some("s3cret"));
        assert_eq!(cookie(&map, "b").as_deref(), Some("2"));
        assert_eq!(cookie(&map, "c"), None);
    }

    #[test]
    fn anonymous_viewers_are_allowed_nothing_beyond_public_reads() {
        let viewer = Viewer::anonymous();
        assert!(!viewer.allows(TokenScope::Read));
        let reader = Viewer {
            user: None,
            via: Via::Token {
                id: 1,
                scope: TokenScope::Read,
            },
        };
        assert!(reader.allows(TokenScope::Read));
        assert!(!reader.allows(TokenScope::Push));
    }
}
