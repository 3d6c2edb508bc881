//! The HTML face of the hub: server-rendered askama pages (catalog,
//! collection, container, build) that work without JavaScript. It reads
//! through [`model::ReadModel`], which the hub implements; it never runs
//! SQL or reaches storage. Templates live in `templates/<page>.html`
//! beside their handlers in `src/pages/<page>.rs`; askama escapes every
//! value, and no template marks user data `|safe`.

use std::sync::Arc;

use axum::routing::get;
use axum::Router;

mod format;
pub mod model;
mod pages;

pub use model::ReadModel;

/// What the pages need to know about the hub itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// The URL clients reach the hub at, without a trailing slash
    /// (`https://hub.example`); pull commands and download links use it.
    pub public_url: String,
}

impl Site {
    /// The `host[:port]` of the public URL.
    pub fn host(&self) -> &str {
        let rest = self
            .public_url
            .split_once("://")
            .map_or(self.public_url.as_str(), |(_, rest)| rest);
        rest.split('/').next().unwrap_or(rest)
    }

    /// The host without its port: apptainer's shub client accepts none.
    pub fn host_without_port(&self) -> &str {
        let host = self.host();
        match host.rsplit_once(':') {
            // `[::1]` alone has colons but no port.
            Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
                name
            }
            _ => host,
        }
    }
}

/// Everything a page handler reaches.
#[derive(Clone)]
pub(crate) struct WebState {
    pub model: Arc<dyn ReadModel>,
    pub site: Arc<Site>,
}

/// The pages, with an HTML 404 for every path no route takes.
pub fn router(model: Arc<dyn ReadModel>, site: Site) -> Router {
    Router::new()
        .route("/", get(pages::catalog::page))
        .route("/builds/{id}", get(pages::build::page))
        .route("/builds/{id}/events", get(pages::build_events::stream))
        .route("/{owner}/{repo}", get(pages::collection::page))
        .route("/{owner}/{repo}/feed.atom", get(pages::feed::collection))
        .route("/{owner}/{repo}/{container}", get(pages::container::page))
        .route(
            "/{owner}/{repo}/{container}/feed.atom",
            get(pages::feed::container),
        )
        .route(
            "/{owner}/{repo}/{container}/badge.svg",
            get(pages::badge::badge),
        )
        .fallback(pages::error::not_found)
        .with_state(WebState {
            model,
            site: Arc::new(site),
        })
}

#[cfg(test)]
mod tests {
    use super::Site;

    fn site(url: &str) -> Site {
        Site {
            public_url: url.to_owned(),
        }
    }

    #[test]
    fn hosts_come_from_the_public_url() {
        assert_eq!(site("https://hub.example").host(), "hub.example");
        assert_eq!(site("http://127.0.0.1:8080").host(), "127.0.0.1:8080");
        assert_eq!(
            site("http://127.0.0.1:8080").host_without_port(),
            "127.0.0.1"
        );
        assert_eq!(site("https://hub.example/sub").host(), "hub.example");
        assert_eq!(site("http://[::1]").host_without_port(), "[::1]");
        assert_eq!(site("http://[::1]:80").host_without_port(), "[::1]");
    }
}
