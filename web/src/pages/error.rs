//! The error page: 404 for unknown and private pages alike, 403 for a
//! refused form, 400 for a form that makes no sense, 502 when GitHub
//! could not be asked, 500 when the hub could not read what the page
//! needs. Rendered without knowing the visitor, so its header offers no
//! account links.

use askama::Template;
use axum::http::StatusCode;
use axum::response::Response;

use super::Header;

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    header: Header,
    status: u16,
    title: &'static str,
    message: String,
}

/// The error page for `status`; `detail` (safe to show: no internals)
/// replaces the standard message.
pub(crate) fn render(status: StatusCode, detail: Option<String>) -> Response {
    let (title, message) = match status {
        StatusCode::NOT_FOUND => (
            "Not found",
            "There is no such page, or it is not visible to you.",
        ),
        StatusCode::FORBIDDEN => ("Forbidden", "You may not do this."),
        StatusCode::BAD_REQUEST => ("Bad request", "The hub cannot act on this request."),
        StatusCode::BAD_GATEWAY => (
            "GitHub did not answer",
            "The hub could not ask GitHub. Try again in a moment.",
        ),
        _ => (
            "Something went wrong",
            "The hub could not show this page. Try again in a moment.",
        ),
    };
    super::render(
        status,
        &ErrorPage {
            header: Header {
                login: None,
                csrf: String::new(),
                sign_in: false,
            },
            status: status.as_u16(),
            title,
            message: detail.unwrap_or_else(|| message.to_owned()),
        },
    )
}

/// The fallback for paths no page takes.
pub(crate) async fn not_found() -> Response {
    render(StatusCode::NOT_FOUND, None)
}
