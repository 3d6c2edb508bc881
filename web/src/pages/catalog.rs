//! `/`: public collections, searchable (`?q=`), sorted (`?sort=name|updated`)
//! and paginated (`?page=`).

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use crate::format;
use crate::model::{CatalogQuery, CatalogSort, CollectionSummary, Visitor};
use crate::WebState;

use super::{Header, PageError};

/// Collections on one page of the catalog.
const PER_PAGE: u32 = 50;

#[derive(Debug, serde::Deserialize)]
pub(crate) struct Params {
    q: Option<String>,
    sort: Option<String>,
    page: Option<String>,
}

#[derive(Template)]
#[template(path = "catalog.html")]
struct CatalogPage {
    header: Header,
    search: String,
    sort: CatalogSort,
    page: u32,
    collections: Vec<CollectionSummary>,
    name_href: String,
    updated_href: String,
    prev_href: Option<String>,
    next_href: Option<String>,
}

impl CollectionSummary {
    pub fn updated_text(&self) -> String {
        format::when_opt(self.updated_at)
    }
}

/// The catalog's URL for a search, sort and page.
fn href(search: &str, sort: CatalogSort, page: u32) -> String {
    let mut params: Vec<(&str, String)> = Vec::new();
    if !search.is_empty() {
        params.push(("q", search.to_owned()));
    }
    if sort != CatalogSort::Name {
        params.push(("sort", sort.as_str().to_owned()));
    }
    if page > 1 {
        params.push(("page", page.to_string()));
    }
    match serde_urlencoded::to_string(&params) {
        Ok(query) if !query.is_empty() => format!("/?{query}"),
        _ => "/".to_owned(),
    }
}

pub(crate) async fn page(
    State(state): State<WebState>,
    visitor: Visitor,
    Query(params): Query<Params>,
) -> Result<Response, PageError> {
    let search = params.q.unwrap_or_default().trim().to_owned();
    let sort = CatalogSort::from_param(params.sort.as_deref());
    let page = params
        .page
        .and_then(|p| p.parse::<u32>().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1);
    let query = CatalogQuery {
        search: search.clone(),
        sort,
        page,
        per_page: PER_PAGE,
    };
    let found = state.model.catalog(&visitor, &query).await?;
    let view = CatalogPage {
        header: Header::new(&state.site, &visitor),
        name_href: href(&search, CatalogSort::Name, 1),
        updated_href: href(&search, CatalogSort::Updated, 1),
        prev_href: (page > 1).then(|| href(&search, sort, page - 1)),
        next_href: found.has_next.then(|| href(&search, sort, page + 1)),
        collections: found.items,
        search,
        sort,
        page,
    };
    Ok(super::render(StatusCode::OK, &view))
}
