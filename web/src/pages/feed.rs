//! `/{owner}/{repo}/feed.atom` and `/{owner}/{repo}/{container}/feed.atom`:
//! Atom 1.0 feeds of the images tags got, newest first, so a subscriber
//! hears when a pipeline's result changes. askama escapes every value of
//! the XML template.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::format;
use crate::model::{FeedView, TagMove, Visitor};
use crate::{Site, WebState};

use super::PageError;

/// Entries a feed lists.
const FEED_ENTRIES: i64 = 50;

#[derive(Template)]
#[template(path = "feed.xml")]
struct Feed {
    id: String,
    /// `owner/repo` or `owner/repo/container`.
    title: String,
    owner: String,
    updated: String,
    self_href: String,
    page_href: String,
    entries: Vec<Entry>,
}

struct Entry {
    id: String,
    title: String,
    updated: String,
    page_href: String,
    download_href: String,
    summary: String,
}

/// The first 12 hex digits of `sha256:<hex>`, then `…`.
fn short_digest(digest: &str) -> String {
    let (algorithm, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    match hex.get(..12) {
        Some(prefix) if prefix.len() < hex.len() => format!("{algorithm}:{prefix}…"),
        _ => digest.to_owned(),
    }
}

fn entry(site: &Site, owner: &str, repo: &str, moved: TagMove) -> Entry {
    let base = &site.public_url;
    let container = &moved.container;
    let summary = format!(
        "{container}:{} now names {} (commit {}, recipe {})",
        moved.tag,
        moved.digest,
        moved.commit_sha.as_deref().unwrap_or("unknown"),
        moved.recipe_path.as_deref().unwrap_or("unknown"),
    );
    Entry {
        // Stable across renders: the same image on the same tag is one entry.
        id: format!(
            "tag:{},2026:sifhub/image/{}/{owner}/{repo}/{container}:{}",
            site.host_without_port(),
            moved.digest,
            moved.tag
        ),
        title: format!(
            "{container}:{} → {}",
            moved.tag,
            short_digest(&moved.digest)
        ),
        updated: format::rfc3339(moved.moved_at),
        page_href: format!("{base}/{owner}/{repo}/{container}#tag-{}", moved.tag),
        // By digest: an older entry still fetches its own image, not the
        // one the tag names now.
        download_href: format!("{base}/download/{}", moved.digest.replacen(':', "/", 1)),
        summary,
    }
}

fn render(site: &Site, view: FeedView) -> Response {
    let base = &site.public_url;
    let path = match &view.container {
        Some(container) => format!("/{}/{}/{container}", view.owner, view.repo),
        None => format!("/{}/{}", view.owner, view.repo),
    };
    // An empty feed has not changed since the epoch.
    let updated = format::rfc3339(view.entries.first().map_or(0, |e| e.moved_at));
    let feed = Feed {
        id: format!("tag:{},2026:sifhub/feed{path}", site.host_without_port()),
        title: path.trim_start_matches('/').to_owned(),
        updated,
        self_href: format!("{base}{path}/feed.atom"),
        page_href: format!("{base}{path}"),
        entries: view
            .entries
            .into_iter()
            .map(|moved| entry(site, &view.owner, &view.repo, moved))
            .collect(),
        owner: view.owner,
    };
    match feed.render() {
        Ok(xml) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/atom+xml")],
            xml,
        )
            .into_response(),
        Err(e) => {
            tracing::error!("cannot render feed: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot render feed\n").into_response()
        }
    }
}

pub(crate) async fn collection(
    State(state): State<WebState>,
    visitor: Visitor,
    Path((owner, repo)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let view = state
        .model
        .feed(&visitor, &owner, &repo, None, FEED_ENTRIES)
        .await?
        .ok_or(PageError::NotFound)?;
    Ok(render(&state.site, view))
}

pub(crate) async fn container(
    State(state): State<WebState>,
    visitor: Visitor,
    Path((owner, repo, container)): Path<(String, String, String)>,
) -> Result<Response, PageError> {
    let view = state
        .model
        .feed(&visitor, &owner, &repo, Some(&container), FEED_ENTRIES)
        .await?
        .ok_or(PageError::NotFound)?;
    Ok(render(&state.site, view))
}

#[cfg(test)]
mod tests {
    use super::short_digest;

    #[test]
    fn digests_shorten() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(short_digest(&digest), "sha256:abababababab…");
        assert_eq!(short_digest("sha256:abc"), "sha256:abc");
    }
}
