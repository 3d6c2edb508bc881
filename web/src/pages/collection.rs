//! `/{owner}/{repo}`: a collection's containers and latest builds.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use crate::format;
use crate::model::{BuildSummary, CollectionView, ContainerSummary};
use crate::WebState;

use super::PageError;

#[derive(Template)]
#[template(path = "collection.html")]
struct CollectionPage {
    collection: CollectionView,
    builds: Vec<BuildSummary>,
}

impl ContainerSummary {
    pub fn updated_text(&self) -> String {
        format::when_opt(self.updated_at)
    }
}

pub(crate) async fn page(
    State(state): State<WebState>,
    Path((owner, repo)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let mut collection = state
        .model
        .collection(&owner, &repo)
        .await?
        .ok_or(PageError::NotFound)?;
    let builds = std::mem::take(&mut collection.builds);
    Ok(super::render(
        StatusCode::OK,
        &CollectionPage { collection, builds },
    ))
}
