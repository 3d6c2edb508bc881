//! `/`: public collections, searchable (`?q=` over owner, repository,
//! container and tag names and label text), sorted
//! (`?sort=name|updated|downloads`) and paginated (`?page=`), with how many
//! match.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use crate::format;
use crate::model::{CatalogQuery, CatalogSort, CollectionSummary, Visitor};
use crate::WebState;

use super::{Header, PageError, TimeText};

/// Collections on one page of the catalog.
const PER_PAGE: u32 = 20;

#[derive(Debug, serde::Deserialize)]
pub(crate) struct Params {
    q: Option<String>,
    sort: Option<String>,
    page: Option<String>,
}

/// A link to the catalog in another order.
struct SortLink {
    sort: CatalogSort,
    label: &'static str,
    href: String,
}

#[derive(Template)]
#[template(path = "catalog.html")]
struct CatalogPage {
    header: Header,
    search: String,
    sort: CatalogSort,
    page: u32,
    collections: Vec<CollectionSummary>,
    /// `1–20 of 5,000 collections`, or empty when none match.
    range_text: String,
    sort_links: Vec<SortLink>,
    prev_href: Option<String>,
    next_href: Option<String>,
}

impl CollectionSummary {
    /// When its latest tag moved; `None` without images.
    pub fn updated_time(&self) -> Option<TimeText> {
        self.updated_at.map(TimeText::of)
    }

    pub fn latest_size_text(&self) -> String {
        self.latest
            .as_ref()
            .map_or_else(|| "—".to_owned(), |latest| format::size(latest.size))
    }

    pub fn downloads_text(&self) -> String {
        format::count(self.downloads)
    }
}

/// `1–20 of 5,000 collections` for `shown` rows from `first` (1-based).
fn range_text(first: i64, shown: usize, total: i64, capped: bool) -> String {
    let Some(last) = i64::try_from(shown)
        .ok()
        .filter(|shown| *shown > 0)
        .map(|shown| first + shown - 1)
    else {
        return String::new();
    };
    let more = if capped { "more than " } else { "" };
    let noun = if total == 1 && !capped {
        "collection"
    } else {
        "collections"
    };
    format!(
        "{}–{} of {more}{} {noun}",
        format::count(first),
        format::count(last),
        format::count(total)
    )
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
    let first = i64::from(page - 1) * i64::from(PER_PAGE) + 1;
    let sort_links = [
        (CatalogSort::Name, "name"),
        (CatalogSort::Updated, "recently built"),
        (CatalogSort::Downloads, "downloads"),
    ]
    .into_iter()
    .map(|(sort, label)| SortLink {
        sort,
        label,
        href: href(&search, sort, 1),
    })
    .collect();
    let view = CatalogPage {
        header: Header::new(&state.site, &visitor),
        range_text: range_text(
            first,
            found.page.items.len(),
            found.total,
            found.total_capped,
        ),
        sort_links,
        prev_href: (page > 1).then(|| href(&search, sort, page - 1)),
        next_href: found.page.has_next.then(|| href(&search, sort, page + 1)),
        collections: found.page.items,
        search,
        sort,
        page,
    };
    Ok(super::render(StatusCode::OK, &view))
}

#[cfg(test)]
mod tests {
    use super::range_text;

    #[test]
    fn ranges_read_with_counts() {
        assert_eq!(range_text(1, 20, 5_000, false), "1–20 of 5,000 collections");
        assert_eq!(
            range_text(3_981, 20, 5_000, false),
            "3,981–4,000 of 5,000 collections"
        );
        assert_eq!(range_text(1, 1, 1, false), "1–1 of 1 collection");
        assert_eq!(
            range_text(1, 20, 10_000, true),
            "1–20 of more than 10,000 collections"
        );
        assert_eq!(range_text(41, 0, 40, false), "");
    }
}
