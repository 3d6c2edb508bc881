//! Browser sign-in: "Sign in with GitHub" (`GET /login`, `GET
//! /login/callback`, `POST /logout`) and the middleware that tells the
//! pages who is looking.
//!
//! `/login` sends the browser to GitHub's authorize page with a random
//! `state`, kept in a short-lived cookie; `/login/callback` accepts the
//! code only with that state, trades it for the user's token, reads who
//! they are and which repositories they may read, write or administer
//! (stored as memberships, so private collections show to collaborators),
//! and starts a 30-day session: the `sifhub_session` cookie holds a random
//! secret (`HttpOnly`, `SameSite=Lax`, `Path=/`, `Secure` behind https),
//! the database its sha256 with a CSRF token every form carries back.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use sifhub_web::{SignedIn, Visitor};

use crate::access::{cookie, signed_in, SESSION_COOKIE};
use crate::actions::{self, ActionError};
use crate::config::Secret;
use crate::db::{hash_token, NewUser};
use crate::github::oauth::OAuthClient;
use crate::serve::AppState;

/// How long a session lasts.
const SESSION_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// The cookie holding `/login`'s state until GitHub sends the browser back.
const STATE_COOKIE: &str = "sifhub_oauth_state";
/// How long a sign-in may take at GitHub.
const STATE_LIFETIME_SECONDS: u64 = 600;

/// What the sign-in routes reach.
#[derive(Clone)]
struct AuthState {
    app: AppState,
    oauth: Option<Arc<OAuthClient>>,
}

/// `/login`, `/login/callback` and `/logout`.
pub fn routes(app: AppState, oauth: Option<Arc<OAuthClient>>) -> Router {
    Router::new()
        .route("/login", get(login))
        .route("/login/callback", get(callback))
        .route("/logout", post(logout))
        .with_state(AuthState { app, oauth })
}

/// `n` random bytes as hex.
fn random_hex(n: usize) -> Result<String, getrandom::Error> {
    let mut bytes = vec![0u8; n];
    getrandom::getrandom(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// A `Set-Cookie` value with the flags every sifhub cookie has.
fn set_cookie(
    app: &AppState,
    name: &str,
    value: &str,
    path: &str,
    max_age: u64,
) -> Option<HeaderValue> {
    let secure = if app.config.resolved_public_url().starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
    ))
    .ok()
}

/// A local path to return to after signing in: `/` and the like, never
/// another host (`//evil.example`) or anything needing escapes.
fn local_path(next: Option<&str>) -> &str {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && path
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b)) =>
        {
            path
        }
        _ => "/",
    }
}

fn error(status: StatusCode, detail: &str) -> Response {
    sifhub_web::error_page(status, Some(detail.to_owned()))
}

fn internal(what: &str, e: &dyn std::error::Error) -> Response {
    tracing::error!("sign-in: {what}: {}", crate::error_chain(e));
    sifhub_web::error_page(StatusCode::INTERNAL_SERVER_ERROR, None)
}

fn callback_url(app: &AppState) -> String {
    format!("{}/login/callback", app.config.resolved_public_url())
}

#[derive(Debug, serde::Deserialize)]
struct LoginParams {
    next: Option<String>,
}

/// Sends the browser to GitHub, remembering the state and where to go back.
async fn login(State(auth): State<AuthState>, Query(params): Query<LoginParams>) -> Response {
    let Some(oauth) = &auth.oauth else {
        return error(
            StatusCode::NOT_FOUND,
            "Signing in is not set up on this hub.",
        );
    };
    let state = match random_hex(16) {
        Ok(state) => state,
        Err(e) => return internal("cannot make a state", &e),
    };
    // The state and the path to return to, in one cookie scoped to the callback.
    let value = format!("{state}.{}", local_path(params.next.as_deref()));
    let mut response =
        Redirect::to(&oauth.authorize_url(&callback_url(&auth.app), &state)).into_response();
    if let Some(cookie) = set_cookie(
        &auth.app,
        STATE_COOKIE,
        &value,
        "/login",
        STATE_LIFETIME_SECONDS,
    ) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

#[derive(Debug, serde::Deserialize)]
struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error_description: Option<String>,
}

/// GitHub sent the browser back: check the state, sign the user in.
async fn callback(
    State(auth): State<AuthState>,
    headers: HeaderMap,
    Query(params): Query<CallbackParams>,
) -> Response {
    let Some(oauth) = &auth.oauth else {
        return error(
            StatusCode::NOT_FOUND,
            "Signing in is not set up on this hub.",
        );
    };
    if let Some(why) = params.error_description {
        return error(
            StatusCode::FORBIDDEN,
            &format!("GitHub did not sign you in: {why}"),
        );
    }
    let (Some(code), Some(state)) = (params.code, params.state) else {
        return error(StatusCode::BAD_REQUEST, "GitHub's answer has no code.");
    };
    let state_cookie = cookie(&headers, STATE_COOKIE);
    let Some((expected, next)) = state_cookie.as_deref().and_then(|v| v.split_once('.')) else {
        return error(
            StatusCode::BAD_REQUEST,
            "The sign-in took too long or cookies are off: sign in again.",
        );
    };
    if expected.is_empty() || expected != state {
        return error(
            StatusCode::BAD_REQUEST,
            "This sign-in was not started here: sign in again.",
        );
    }
    let next = local_path(Some(next)).to_owned();
    let token = match oauth.exchange_code(&code, &callback_url(&auth.app)).await {
        Ok(token) => token,
        Err(e) => {
            tracing::warn!("sign-in: {e}");
            return error(
                StatusCode::BAD_GATEWAY,
                "GitHub refused the sign-in: sign in again.",
            );
        }
    };
    match start_session(&auth.app, oauth, &token).await {
        Ok(session_cookie) => {
            let mut response = Redirect::to(&next).into_response();
            let headers = response.headers_mut();
            if let Some(cookie) = set_cookie(
                &auth.app,
                SESSION_COOKIE,
                &session_cookie,
                "/",
                SESSION_LIFETIME.as_secs(),
            ) {
                headers.append(header::SET_COOKIE, cookie);
            }
            if let Some(cookie) = set_cookie(&auth.app, STATE_COOKIE, "", "/login", 0) {
                headers.append(header::SET_COOKIE, cookie);
            }
            response
        }
        Err(SignInError::GitHub(e)) => {
            tracing::warn!("sign-in: {e}");
            error(
                StatusCode::BAD_GATEWAY,
                "GitHub did not answer: sign in again.",
            )
        }
        Err(e) => internal("cannot start a session", &e),
    }
}

#[derive(Debug, thiserror::Error)]
enum SignInError {
    #[error(transparent)]
    GitHub(#[from] crate::github::GitHubError),
    #[error(transparent)]
    Database(#[from] crate::db::DbError),
    #[error("cannot record the user's repositories")]
    Memberships(#[source] ActionError),
    #[error("cannot make a session secret")]
    Random(#[source] getrandom::Error),
}

/// Records the user and their repositories' permissions and opens a
/// session; returns the cookie's secret.
async fn start_session(
    app: &AppState,
    oauth: &OAuthClient,
    token: &Secret,
) -> Result<String, SignInError> {
    let user = oauth.user(token).await?;
    let now = app.queue.now();
    let user = app
        .db
        .upsert_user(
            &NewUser {
                github_id: user.id,
                login: user.login,
                name: user.name,
                avatar_url: user.avatar_url,
            },
            now,
        )
        .await?;
    let members_of = actions::refresh_memberships(app, oauth, token, user.id)
        .await
        .map_err(|e| match e {
            ActionError::GitHub(e) => SignInError::GitHub(e),
            other => SignInError::Memberships(other),
        })?;
    let secret = random_hex(32).map_err(SignInError::Random)?;
    let csrf = random_hex(32).map_err(SignInError::Random)?;
    app.db
        .insert_session(
            &hash_token(&secret),
            user.id,
            &csrf,
            Some(token.expose()),
            now,
            now.plus(SESSION_LIFETIME),
        )
        .await?;
    tracing::info!(
        "{} signed in (member of {members_of} repositories the hub knows)",
        user.login
    );
    Ok(secret)
}

#[derive(Debug, serde::Deserialize)]
struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// Ends the session (only with its CSRF token) and forgets the cookie.
async fn logout(
    State(auth): State<AuthState>,
    visitor: Visitor,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    if !visitor.csrf_matches(&form.csrf) {
        return error(
            StatusCode::FORBIDDEN,
            "The form is stale or came from another site; reload the page and try again.",
        );
    }
    if let Some(secret) = cookie(&headers, SESSION_COOKIE) {
        if let Err(e) = auth.app.db.delete_session(&hash_token(&secret)).await {
            return internal("cannot end the session", &e);
        }
    }
    let mut response = Redirect::to("/").into_response();
    if let Some(cookie) = set_cookie(&auth.app, SESSION_COOKIE, "", "/", 0) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// Puts the [`Visitor`] the session cookie names into the request for
/// the pages. An unknown or expired session is an anonymous visitor (the
/// page still shows); a failing database is too, logged.
pub async fn visitor_layer(
    State(app): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let visitor = match signed_in(&app, request.headers()).await {
        Ok(Some(signed_in)) => Visitor {
            user: Some(SignedIn {
                id: signed_in.user.id,
                login: signed_in.user.login,
            }),
            csrf_token: Some(signed_in.session.csrf_token),
            session: Some(signed_in.token_hash),
        },
        Ok(None) => Visitor::default(),
        Err(e) => {
            tracing::error!("session lookup failed: {}", crate::error_chain(&e));
            Visitor::default()
        }
    };
    request.extensions_mut().insert(visitor);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_paths_stay_local() {
        assert_eq!(local_path(Some("/connect")), "/connect");
        assert_eq!(local_path(Some("//evil.example/x")), "/");
        assert_eq!(local_path(Some("https://evil.example")), "/");
        assert_eq!(local_path(Some("/a?b")), "/");
        assert_eq!(local_path(None), "/");
    }
}
