//! `/builds/{id}`: a build's status, times, commit, recipe and log. While
//! it is queued or running a small inline script follows the log over
//! `/builds/{id}/events`; without JavaScript the page refreshes itself, so
//! the log grows anyway.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use crate::model::{BuildView, Visitor};
use crate::WebState;

use super::{Header, PageError};

#[derive(Template)]
#[template(path = "build.html")]
struct BuildPage {
    header: Header,
    build: BuildView,
    log: String,
    in_progress: bool,
}

pub(crate) async fn page(
    State(state): State<WebState>,
    visitor: Visitor,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    // A malformed id is a page that does not exist, not a bad request.
    let id: i64 = id.parse().map_err(|_| PageError::NotFound)?;
    let build = state
        .model
        .build(&visitor, id)
        .await?
        .ok_or(PageError::NotFound)?;
    let log = state
        .model
        .build_log(&visitor, id)
        .await?
        .ok_or(PageError::NotFound)?;
    let in_progress = matches!(build.summary.status.as_str(), "queued" | "running");
    Ok(super::render(
        StatusCode::OK,
        &BuildPage {
            header: Header::new(&state.site, &visitor),
            build,
            log,
            in_progress,
        },
    ))
}
