//! The few files every site has: `robots.txt` and the favicon, served by
//! the hub itself (nothing comes from another host).

use axum::http::header;
use axum::response::IntoResponse;

/// Crawlers may read the pages but not fetch images, follow live logs or
/// press buttons.
const ROBOTS: &str = "User-agent: *
Disallow: /download/
Disallow: /builds/*/events
Disallow: /login
Disallow: /logout
Disallow: /connect
Allow: /
";

const FAVICON: &str = include_str!("../../templates/favicon.svg");

pub(crate) async fn robots() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        ROBOTS,
    )
}

pub(crate) async fn favicon() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        FAVICON,
    )
}
