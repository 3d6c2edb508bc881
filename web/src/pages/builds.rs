//! `/builds` and `/{owner}/{repo}/builds`: builds the visitor may see,
//! newest first, filtered by status (`?status=running`) and paginated
//! (`?page=`).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use crate::model::{BuildListItem, BuildsQuery, Visitor, BUILD_STATUSES};
use crate::WebState;

use super::{Header, PageError};

/// Builds on one page of a list.
const PER_PAGE: u32 = 50;

#[derive(Debug, serde::Deserialize)]
pub(crate) struct Params {
    status: Option<String>,
    page: Option<String>,
}

/// A status filter link.
struct Filter {
    label: &'static str,
    href: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "builds.html")]
struct BuildsPage {
    header: Header,
    /// `owner/repo`, or `None` for every collection.
    collection: Option<String>,
    filters: Vec<Filter>,
    status: Option<String>,
    page: u32,
    builds: Vec<BuildListItem>,
    prev_href: Option<String>,
    next_href: Option<String>,
}

/// The list's URL for a status and page.
fn href(base: &str, status: Option<&str>, page: u32) -> String {
    let mut params: Vec<(&str, String)> = Vec::new();
    if let Some(status) = status {
        params.push(("status", status.to_owned()));
    }
    if page > 1 {
        params.push(("page", page.to_string()));
    }
    match serde_urlencoded::to_string(&params) {
        Ok(query) if !query.is_empty() => format!("{base}?{query}"),
        _ => base.to_owned(),
    }
}

async fn list(
    state: WebState,
    visitor: Visitor,
    collection: Option<(String, String)>,
    params: Params,
) -> Result<Response, PageError> {
    // An unknown status filters nothing rather than failing.
    let status = params
        .status
        .filter(|s| BUILD_STATUSES.contains(&s.as_str()));
    let page = params
        .page
        .and_then(|p| p.parse::<u32>().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1);
    let query = BuildsQuery {
        collection: collection.clone(),
        status: status.clone(),
        page,
        per_page: PER_PAGE,
    };
    let found = state
        .model
        .builds(&visitor, &query)
        .await?
        .ok_or(PageError::NotFound)?;
    let base = match &collection {
        Some((owner, repo)) => format!("/{owner}/{repo}/builds"),
        None => "/builds".to_owned(),
    };
    let mut filters = vec![Filter {
        label: "all",
        href: href(&base, None, 1),
        current: status.is_none(),
    }];
    filters.extend(BUILD_STATUSES.iter().map(|s| Filter {
        label: s,
        href: href(&base, Some(s), 1),
        current: status.as_deref() == Some(*s),
    }));
    let view = BuildsPage {
        header: Header::new(&state.site, &visitor),
        // The stored spelling, when a build shows it.
        collection: collection.map(|(owner, repo)| {
            found.items.first().map_or(format!("{owner}/{repo}"), |b| {
                format!("{}/{}", b.owner, b.repo)
            })
        }),
        filters,
        prev_href: (page > 1).then(|| href(&base, status.as_deref(), page - 1)),
        next_href: found
            .has_next
            .then(|| href(&base, status.as_deref(), page + 1)),
        status,
        page,
        builds: found.items,
    };
    Ok(super::render(StatusCode::OK, &view))
}

pub(crate) async fn all(
    State(state): State<WebState>,
    visitor: Visitor,
    Query(params): Query<Params>,
) -> Result<Response, PageError> {
    list(state, visitor, None, params).await
}

pub(crate) async fn collection(
    State(state): State<WebState>,
    visitor: Visitor,
    Path((owner, repo)): Path<(String, String)>,
    Query(params): Query<Params>,
) -> Result<Response, PageError> {
    list(state, visitor, Some((owner, repo)), params).await
}

#[cfg(test)]
mod tests {
    use super::href;

    #[test]
    fn hrefs_carry_status_and_page() {
        assert_eq!(href("/builds", None, 1), "/builds");
        assert_eq!(
            href("/a/b/builds", Some("running"), 2),
            "/a/b/builds?status=running&page=2"
        );
    }
}
