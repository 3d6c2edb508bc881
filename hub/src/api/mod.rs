//! The hub's HTTP APIs, one module per protocol.

pub mod worker;
