//! What both services share, so each binary's `main.rs` only wires: JSON telemetry, the one-line
//! request log, RFC 9457 problem responses, and serving with a graceful drain on SIGTERM/SIGINT.

pub mod docs;
pub mod health;
pub mod problem;
pub mod request_log;
pub mod serve;
pub mod telemetry;
pub mod upstream;

pub use docs::with_docs;
pub use health::HealthApi;
pub use problem::Problem;
pub use serve::serve;
