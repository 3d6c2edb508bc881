//! `/{owner}/{repo}/{container}/badge.svg[?tag=]`: a flat build-status
//! badge for a README, from the container's latest build. askama escapes
//! every value of the SVG template.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::model::Visitor;
use crate::WebState;

use super::PageError;

#[derive(Template)]
#[template(path = "badge.svg")]
struct Badge {
    /// `container` or `container:tag`, for screen readers.
    subject: String,
    label: &'static str,
    message: &'static str,
    colour: &'static str,
    label_width: usize,
    message_width: usize,
}

#[derive(Debug, Deserialize)]
pub(crate) struct BadgeQuery {
    tag: Option<String>,
}

/// What the badge says, and its colour, for a build status.
fn state(status: Option<&str>) -> (&'static str, &'static str) {
    match status {
        Some("succeeded") => ("passing", "#4c1"),
        Some("failed") => ("failing", "#e05d44"),
        Some("running") => ("building", "#007ec6"),
        Some("queued") => ("queued", "#9f9f9f"),
        _ => ("unknown", "#d3d3d3"),
    }
}

/// About how wide `text` sets in 11px Verdana, with padding.
fn text_width(text: &str) -> usize {
    text.chars().count() * 7 + 10
}

pub(crate) async fn badge(
    State(state_): State<WebState>,
    visitor: Visitor,
    Path((owner, repo, container)): Path<(String, String, String)>,
    Query(query): Query<BadgeQuery>,
) -> Result<Response, PageError> {
    let tag = query.tag.as_deref().filter(|t| !t.is_empty());
    let status = state_
        .model
        .build_status(&visitor, &owner, &repo, &container, tag)
        .await?
        .ok_or(PageError::NotFound)?;
    let (message, colour) = state(status.as_deref());
    let label = "build";
    let badge = Badge {
        subject: match tag {
            Some(tag) => format!("{container}:{tag}"),
            None => container,
        },
        label,
        message,
        colour,
        label_width: text_width(label),
        message_width: text_width(message),
    };
    Ok(match badge.render() {
        Ok(svg) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "image/svg+xml"),
                // READMEs cache images hard; the state changes with every build.
                (header::CACHE_CONTROL, "no-cache"),
            ],
            svg,
        )
            .into_response(),
        Err(e) => {
            tracing::error!("cannot render badge: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot render badge\n").into_response()
        }
    })
}
