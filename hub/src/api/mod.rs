//! The hub's HTTP APIs, each in its own file, merged into
//! [`crate::serve::router`].

use axum::Router;

use crate::serve::AppState;

pub mod download;
pub mod library;
pub mod oci;
pub mod shub;
pub mod webhook;
pub mod worker;

/// Every API route.
pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(download::routes())
        .merge(library::routes())
        .merge(oci::routes())
        .merge(shub::routes())
        .merge(webhook::routes())
        .nest(crate::worker::protocol::PREFIX, worker::routes())
}
