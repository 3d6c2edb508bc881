//! The hub's HTTP APIs, merged into `serve::router`.

use axum::Router;

use crate::serve::AppState;

pub mod webhook;

/// Every API route.
pub fn routes() -> Router<AppState> {
    Router::new().merge(webhook::routes())
}
