//! `/{owner}/{repo}`: a collection's containers and latest builds, and for
//! its owners (write or admin permission) the settings form and a
//! "rebuild" button per recipe, posting to `/{owner}/{repo}/-/settings`
//! and `/{owner}/{repo}/-/rebuild` with the session's CSRF token.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;

use crate::model::{BuildSummary, CollectionView, ContainerSummary, SettingsChange, Visitor};
use crate::WebState;

use super::{check_csrf, Header, PageError, TimeText};

#[derive(Template)]
#[template(path = "collection.html")]
struct CollectionPage {
    header: Header,
    collection: CollectionView,
    builds: Vec<BuildSummary>,
    /// The build branches as the settings form shows them.
    branches_text: String,
    /// The repository on GitHub.
    github_href: String,
}

impl ContainerSummary {
    pub fn updated_time(&self) -> Option<TimeText> {
        self.updated_at.map(TimeText::of)
    }
}

pub(crate) async fn page(
    State(state): State<WebState>,
    visitor: Visitor,
    Path((owner, repo)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let mut collection = state
        .model
        .collection(&visitor, &owner, &repo)
        .await?
        .ok_or(PageError::NotFound)?;
    let builds = std::mem::take(&mut collection.builds);
    let branches_text = collection
        .controls
        .as_ref()
        .map(|c| c.build_branches.join(", "))
        .unwrap_or_default();
    Ok(super::render(
        StatusCode::OK,
        &CollectionPage {
            header: Header::new(&state.site, &visitor),
            builds,
            github_href: format!(
                "{}/{}/{}",
                state.site.github_url, collection.owner, collection.name
            ),
            collection,
            branches_text,
        },
    ))
}

/// The settings form. Unchecked checkboxes are not sent.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct SettingsForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    branches: String,
    private: Option<String>,
    paused: Option<String>,
}

/// Branch names from the form's text: separated by commas or white space.
fn branch_list(text: &str) -> Vec<String> {
    let mut branches: Vec<String> = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|b| !b.is_empty())
        .map(str::to_owned)
        .collect();
    branches.dedup();
    branches
}

pub(crate) async fn settings(
    State(state): State<WebState>,
    visitor: Visitor,
    Path((owner, repo)): Path<(String, String)>,
    Form(form): Form<SettingsForm>,
) -> Result<Response, PageError> {
    check_csrf(&visitor, &form.csrf)?;
    let change = SettingsChange {
        build_branches: branch_list(&form.branches),
        private: form.private.is_some(),
        paused: form.paused.is_some(),
    };
    state
        .controls
        .update_settings(&visitor, &owner, &repo, &change)
        .await?;
    Ok(Redirect::to(&format!("/{owner}/{repo}")).into_response())
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct RebuildForm {
    #[serde(default)]
    csrf: String,
    recipe: String,
}

pub(crate) async fn rebuild(
    State(state): State<WebState>,
    visitor: Visitor,
    Path((owner, repo)): Path<(String, String)>,
    Form(form): Form<RebuildForm>,
) -> Result<Response, PageError> {
    check_csrf(&visitor, &form.csrf)?;
    let build_id = state
        .controls
        .rebuild(&visitor, &owner, &repo, &form.recipe)
        .await?;
    Ok(Redirect::to(&format!("/builds/{build_id}")).into_response())
}

#[cfg(test)]
mod tests {
    use super::branch_list;

    #[test]
    fn branches_split_on_commas_and_spaces() {
        assert_eq!(branch_list(""), Vec::<String>::new());
        assert_eq!(
            branch_list("main, dev  release/1"),
            ["main", "dev", "release/1"]
        );
    }
}
