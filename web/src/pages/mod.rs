//! The page handlers, one file per page beside its template.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use crate::format;
use crate::model::{BuildSummary, ControlError, ModelError, Visitor};
use crate::Site;

pub mod assets;
pub mod badge;
pub mod build;
pub mod build_events;
pub mod builds;
pub mod catalog;
pub mod collection;
pub mod connect;
pub mod container;
pub mod error;
pub mod feed;

/// Why a page was not shown.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// Unknown, or not visible to this visitor: the same answer for both.
    #[error("page not found")]
    NotFound,
    /// A form without the session's CSRF token, or an action the visitor
    /// may not take.
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("bad request: {0}")]
    Invalid(String),
    #[error("github: {0}")]
    Upstream(String),
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl From<ControlError> for PageError {
    fn from(err: ControlError) -> Self {
        match err {
            ControlError::NotFound => PageError::NotFound,
            ControlError::Forbidden(why) => PageError::Forbidden(why),
            ControlError::Invalid(why) => PageError::Invalid(why),
            ControlError::Upstream(why) => PageError::Upstream(why),
            ControlError::Failed(e) => PageError::Model(e),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::NotFound => error::render(StatusCode::NOT_FOUND, None),
            PageError::Forbidden(why) => error::render(StatusCode::FORBIDDEN, Some(why)),
            PageError::Invalid(why) => error::render(StatusCode::BAD_REQUEST, Some(why)),
            PageError::Upstream(why) => {
                tracing::warn!("page failed: github: {why}");
                error::render(StatusCode::BAD_GATEWAY, Some(why))
            }
            PageError::Model(e) => {
                tracing::error!("page failed: {}", error_chain(&e));
                error::render(StatusCode::INTERNAL_SERVER_ERROR, None)
            }
        }
    }
}

/// What every page's header shows: the sign-in link, or who is signed
/// in with a sign-out form.
pub(crate) struct Header {
    pub login: Option<String>,
    /// The session's CSRF token for the header's and page's forms.
    pub csrf: String,
    /// Sign-in is set up.
    pub sign_in: bool,
}

impl Header {
    pub fn new(site: &Site, visitor: &Visitor) -> Header {
        Header {
            login: visitor.user.as_ref().map(|u| u.login.clone()),
            csrf: visitor.csrf().to_owned(),
            sign_in: site.sign_in,
        }
    }
}

/// Refuses a form whose CSRF token is not the visitor's session's.
pub(crate) fn check_csrf(visitor: &Visitor, sent: &str) -> Result<(), PageError> {
    if visitor.user.is_none() {
        return Err(PageError::Forbidden("sign in first".to_owned()));
    }
    if !visitor.csrf_matches(sent) {
        return Err(PageError::Forbidden(
            "the form is stale or came from another site; reload the page and try again".to_owned(),
        ));
    }
    Ok(())
}

/// A time shown relative to now, with the exact time on hover.
pub struct TimeText {
    /// RFC 3339, for `<time datetime>`.
    pub iso: String,
    /// `2026-11-27 15:48 UTC`.
    pub exact: String,
    /// `3 hours ago`.
    pub relative: String,
}

impl TimeText {
    pub fn of(millis: i64) -> TimeText {
        TimeText {
            iso: format::rfc3339(millis),
            exact: format::when(millis),
            relative: format::relative(millis, chrono::Utc::now().timestamp_millis()),
        }
    }
}

/// An error and its causes on one line, for the log.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A rendered page with `status`; a template that fails to render (a bug,
/// not a visitor's doing) answers a bare 500.
pub(crate) fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!("cannot render page: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot render page\n").into_response()
        }
    }
}

/// What build lists show of a build.
impl BuildSummary {
    pub fn queued_time(&self) -> TimeText {
        TimeText::of(self.queued_at)
    }

    pub fn started_time(&self) -> Option<TimeText> {
        self.started_at.map(TimeText::of)
    }

    pub fn finished_time(&self) -> Option<TimeText> {
        self.finished_at.map(TimeText::of)
    }

    /// How long it ran, `—` before it started.
    pub fn duration_text(&self) -> String {
        match (self.started_at, self.finished_at) {
            (Some(start), Some(end)) => format::duration(start, end),
            (Some(_), None) => "running".to_owned(),
            _ => "—".to_owned(),
        }
    }

    pub fn short_commit(&self) -> &str {
        self.commit_sha.get(..12).unwrap_or(&self.commit_sha)
    }
}
