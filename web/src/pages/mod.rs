//! The page handlers, one file per page beside its template.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use crate::format;
use crate::model::{BuildSummary, ModelError};

pub mod badge;
pub mod build;
pub mod build_events;
pub mod catalog;
pub mod collection;
pub mod container;
pub mod error;
pub mod feed;

/// Why a page was not shown.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// Unknown, or not visible to this visitor: the same answer for both.
    #[error("page not found")]
    NotFound,
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::NotFound => error::render(StatusCode::NOT_FOUND),
            PageError::Model(e) => {
                tracing::error!("page failed: {}", error_chain(&e));
                error::render(StatusCode::INTERNAL_SERVER_ERROR)
            }
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
    pub fn queued_text(&self) -> String {
        format::when(self.queued_at)
    }

    pub fn started_text(&self) -> String {
        format::when_opt(self.started_at)
    }

    pub fn finished_text(&self) -> String {
        format::when_opt(self.finished_at)
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
