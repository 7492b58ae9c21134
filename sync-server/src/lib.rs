//! Tandem's sync server.
//!
//! Layers, bottom up: [`store`] (SQLite, group commit) ← [`protocol`] (sans-I/O room state
//! machine over `tandem_core::wire` messages) ← the tokio layer ([`server`], which only
//! moves bytes: HTTP routing, WebSocket framing, queues, timers).

mod chunks;
pub mod config;
pub mod history;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod store;
