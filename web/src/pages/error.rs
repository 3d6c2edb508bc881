//! The error page: 404 for unknown and private pages alike, 500 when the
//! hub could not read what the page needs.

use askama::Template;
use axum::http::StatusCode;
use axum::response::Response;

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    status: u16,
    title: &'static str,
    message: &'static str,
}

pub(crate) fn render(status: StatusCode) -> Response {
    let (title, message) = if status == StatusCode::NOT_FOUND {
        (
            "Not found",
            "There is no such page, or it is not visible to you.",
        )
    } else {
        (
            "Something went wrong",
            "The hub could not show this page. Try again in a moment.",
        )
    };
    super::render(
        status,
        &ErrorPage {
            status: status.as_u16(),
            title,
            message,
        },
    )
}

/// The fallback for paths no page takes.
pub(crate) async fn not_found() -> Response {
    render(StatusCode::NOT_FOUND)
}
