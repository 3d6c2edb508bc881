//! The sifhub hub: configuration, the HTTP server and the command line.
//! Build logic lives in `sifhub-builder`, HTML in `sifhub-web`.

pub mod api;
pub mod cli;
pub mod config;
pub mod db;
pub mod github;
pub mod queue;
pub mod serve;
pub mod storage;
pub mod worker;
