//! The sifhub hub: configuration, the HTTP server and the command line.
//! Build logic lives in `sifhub-builder`, HTML in `sifhub-web`.

pub mod access;
pub mod actions;
pub mod api;
pub mod cli;
pub mod config;
pub mod db;
pub mod github;
pub mod queue;
pub mod serve;
pub mod storage;
pub mod web_auth;
pub mod web_controls;
pub mod web_model;
pub mod worker;

/// An error and its causes on one line, `a: b: c`, as logs and answers
/// show them.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
