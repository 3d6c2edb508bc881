//! The HTML face of the hub: server-rendered askama pages (catalog,
//! collection, container, build) that work without JavaScript. It reads
//! through [`model::ReadModel`], which the hub implements; it never runs
//! SQL or reaches storage. Templates live in `templates/<page>.html`
//! beside their handlers in `src/pages/<page>.rs`; askama escapes every
//! value, and no template marks user data `|safe`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::Router;

mod format;
pub mod model;
mod pages;

pub use model::{Controls, ReadModel, SignedIn, Visitor};

/// The site's error page for `status`, with `detail` (shown to the
/// visitor: no internals) in place of the standard message; for the
/// hub's own routes (sign-in) to answer in the site's style.
pub fn error_page(
    status: axum::http::StatusCode,
    detail: Option<String>,
) -> axum::response::Response {
    pages::error::render(status, detail)
}

/// What the pages need to know about the hub itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// The URL clients reach the hub at, without a trailing slash
    /// (`https://hub.example`); pull commands and download links use it.
    pub public_url: String,
    /// Whether "Sign in with GitHub" is set up; without it the header
    /// offers no sign-in link.
    pub sign_in: bool,
    /// GitHub's web address (`https://github.com`), for links to repositories.
    pub github_url: String,
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

/// The visitor the hub's middleware put in the request; anonymous when
/// there is none.
impl<S: Send + Sync> FromRequestParts<S> for Visitor {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Visitor>()
            .cloned()
            .unwrap_or_default())
    }
}

/// Everything a page handler reaches.
#[derive(Clone)]
pub(crate) struct WebState {
    pub model: Arc<dyn ReadModel>,
    pub controls: Arc<dyn Controls>,
    pub site: Arc<Site>,
}

/// The pages, with an HTML 404 for every path no route takes.
pub fn router(model: Arc<dyn ReadModel>, controls: Arc<dyn Controls>, site: Site) -> Router {
    Router::new()
        .route("/", get(pages::catalog::page))
        .route("/robots.txt", get(pages::assets::robots))
        .route("/favicon.svg", get(pages::assets::favicon))
        .route("/favicon.ico", get(pages::assets::favicon))
        .route("/connect", get(pages::connect::page))
        .route(
            "/connect/{owner}/{repo}/enable",
            post(pages::connect::enable),
        )
        .route(
            "/connect/{owner}/{repo}/disable",
            post(pages::connect::disable),
        )
        .route("/builds", get(pages::builds::all))
        .route("/builds/{id}", get(pages::build::page))
        .route("/builds/{id}/events", get(pages::build_events::stream))
        .route("/{owner}/{repo}", get(pages::collection::page))
        .route("/{owner}/{repo}/feed.atom", get(pages::feed::collection))
        .route("/{owner}/{repo}/builds", get(pages::builds::collection))
        .route(
            "/{owner}/{repo}/-/settings",
            post(pages::collection::settings),
        )
        .route(
            "/{owner}/{repo}/-/rebuild",
            post(pages::collection::rebuild),
        )
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
            controls,
            site: Arc::new(site),
        })
}

#[cfg(test)]
mod tests {
    use super::Site;

    fn site(url: &str) -> Site {
        Site {
            public_url: url.to_owned(),
            sign_in: false,
            github_url: "https://github.com".to_owned(),
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
