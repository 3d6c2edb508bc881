//! The Singularity Hub API that `apptainer pull shub://` speaks:
//! `GET /api/container/<owner>/<repo>[/<container>][:<tag>][@<digest>]`
//! answers `{"image", "name", "tag", "version", "commit"}`, `image` being
//! the absolute download URL of the image by digest.
//!
//! `owner/repo` names the repository's root container (the one named
//! after the repository); `owner/repo/container` a sub-folder's, for
//! clients that can send it (apptainer's parser cannot). The tag defaults
//! to `latest` when neither a tag nor a digest is given. A digest
//! (`sha256:<hex>` or the bare hex, as `commit` gives it) picks the image
//! among those the container's tags name or have named.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::access::Viewer;
use crate::db::{DbError, Image};
use crate::serve::AppState;

/// The tag a reference without tag or digest names.
const DEFAULT_TAG: &str = "latest";

#[derive(Debug, thiserror::Error)]
pub enum ShubError {
    #[error("{0}")]
    BadReference(String),
    #[error("image {0} not found")]
    NotFound(String),
    #[error(transparent)]
    Database(#[from] DbError),
}

#[derive(Serialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize)]
struct ErrorDetail {
    code: u16,
    message: String,
}

impl IntoResponse for ShubError {
    fn into_response(self) -> Response {
        let status = match &self {
            ShubError::BadReference(_) => StatusCode::BAD_REQUEST,
            ShubError::NotFound(_) => StatusCode::NOT_FOUND,
            ShubError::Database(e) => {
                tracing::error!("shub api: {e}");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let message = match &self {
            ShubError::Database(_) => "internal error".to_owned(),
            other => other.to_string(),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: status.as_u16(),
                message,
            },
        };
        (status, Json(body)).into_response()
    }
}

/// What the shub client reads.
#[derive(Debug, Serialize)]
struct Manifest {
    image: String,
    name: String,
    tag: String,
    version: String,
    commit: String,
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/container/{*reference}", get(container))
}

/// A parsed `owner/repo[/container][:tag][@digest]`.
#[derive(Debug, PartialEq, Eq)]
struct Reference {
    owner: String,
    repo: String,
    container: String,
    /// `owner/repo` for a root container, `owner/repo/container` otherwise.
    name: String,
    tag: Option<String>,
    /// `sha256:<hex>` when the digest has that form; other digests name
    /// nothing here.
    digest: Option<String>,
}

fn parse_reference(reference: &str) -> Result<Reference, ShubError> {
    let bad = || {
        ShubError::BadReference(format!(
            "reference {reference:?} is not <owner>/<repo>[/<container>][:<tag>][@<digest>]"
        ))
    };
    let (path, digest) = match reference.rsplit_once('@') {
        Some((path, digest)) => (path, Some(digest)),
        None => (reference, None),
    };
    let (path, tag) = match path.rsplit_once('/') {
        Some((front, last)) => match last.split_once(':') {
            Some((name, tag)) => (format!("{front}/{name}"), Some(tag.to_owned())),
            None => (path.to_owned(), None),
        },
        None => return Err(bad()),
    };
    let parts: Vec<&str> = path.split('/').collect();
    if parts.iter().any(|part| part.is_empty()) || tag.as_deref() == Some("") {
        return Err(bad());
    }
    let (owner, repo, container) = match parts.as_slice() {
        [owner, repo] => (*owner, *repo, *repo),
        [owner, repo, container] => (*owner, *repo, *container),
        _ => return Err(bad()),
    };
    let digest = match digest {
        None => None,
        Some(digest) => {
            let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
            Some(format!("sha256:{hex}"))
        }
    };
    Ok(Reference {
        owner: owner.to_owned(),
        repo: repo.to_owned(),
        container: container.to_owned(),
        name: path,
        tag: match (&tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            _ => tag,
        },
        digest,
    })
}

async fn container(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(reference): Path<String>,
) -> Result<Response, ShubError> {
    let reference = parse_reference(&reference)?;
    let not_found = || {
        let mut what = reference.name.clone();
        if let Some(tag) = &reference.tag {
            what.push(':');
            what.push_str(tag);
        }
        if let Some(digest) = &reference.digest {
            what.push('@');
            what.push_str(digest);
        }
        ShubError::NotFound(what)
    };
    let (image, tag): (Image, String) = match (&reference.digest, &reference.tag) {
        (Some(digest), tag) => {
            let (_, container) = state
                .db
                .readable_container(
                    &viewer,
                    &reference.owner,
                    &reference.repo,
                    &reference.container,
                )
                .await?
                .ok_or_else(not_found)?;
            let found = state
                .db
                .find_container_image_by_digest(container.id, digest, tag.as_deref())
                .await?
                .ok_or_else(not_found)?;
            (found.image, found.tag)
        }
        (None, Some(tag)) => {
            let image = state
                .db
                .find_readable_tagged_image(
                    &viewer,
                    &reference.owner,
                    &reference.repo,
                    &reference.container,
                    tag,
                )
                .await?
                .ok_or_else(not_found)?;
            (image, tag.clone())
        }
        (None, None) => return Err(not_found()),
    };
    let hex = image
        .digest
        .strip_prefix("sha256:")
        .unwrap_or(&image.digest)
        .to_owned();
    let manifest = Manifest {
        image: format!(
            "{}/download/sha256/{hex}",
            state.config.resolved_public_url().trim_end_matches('/')
        ),
        name: reference.name,
        tag,
        version: image.digest.clone(),
        // apptainer keys its shub cache on `commit`, so it must differ
        // whenever the bytes do and never be empty. The git commit fails
        // both: one commit builds several containers and tags (a cache
        // hit would hand out the wrong image), and a pushed image has
        // none. The image's sha256 is hex, never empty, and the same
        // exactly when the bytes are.
        commit: hex,
    };
    let cache_control = if reference.digest.is_some() {
        "public, max-age=3600"
    } else {
        // A tag moves on rebuild.
        "no-cache"
    };
    Ok(([(header::CACHE_CONTROL, cache_control)], Json(manifest)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_root_and_sub_folder_containers() {
        let root = parse_reference("alice/tools").unwrap();
        assert_eq!(
            (
                root.owner.as_str(),
                root.repo.as_str(),
                root.container.as_str()
            ),
            ("alice", "tools", "tools")
        );
        assert_eq!(root.name, "alice/tools");
        assert_eq!(root.tag.as_deref(), Some("latest"));
        assert_eq!(root.digest, None);

        let sub = parse_reference("alice/tools/samtools:1.2").unwrap();
        assert_eq!(sub.container, "samtools");
        assert_eq!(sub.name, "alice/tools/samtools");
        assert_eq!(sub.tag.as_deref(), Some("1.2"));

        let hex = "ab".repeat(32);
        let pinned = parse_reference(&format!("alice/tools@{hex}")).unwrap();
        assert_eq!(pinned.tag, None);
        assert_eq!(pinned.digest, Some(format!("sha256:{hex}")));
        let both = parse_reference(&format!("alice/tools:v1@sha256:{hex}")).unwrap();
        assert_eq!(both.tag.as_deref(), Some("v1"));
        assert_eq!(both.digest, Some(format!("sha256:{hex}")));

        for bad in [
            "alice",
            "alice/",
            "/tools",
            "a/b/c/d",
            "alice/tools:",
            "a//b",
        ] {
            assert!(parse_reference(bad).is_err(), "{bad}");
        }
    }
}
