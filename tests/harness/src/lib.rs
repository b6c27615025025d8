//! Real components on loopback, for tests and for `local-stack`.
//!
//! Every type starts one real thing and stops it again when dropped (processes are killed,
//! temporary directories removed). The API is synchronous and safe to call from a
//! `#[tokio::test]`: nothing here calls `block_on` on the caller's thread. Errors are
//! [`anyhow::Error`]s whose context says what to install when a prerequisite is missing.
//!
//! | type | what it starts |
//! |---|---|
//! | [`Postgres`] | a throwaway PostgreSQL cluster on `127.0.0.1:<free port>` (optionally with TLS, or as a synchronous standby) |
//! | [`AuroraEndpoint`] | an Aurora endpoint in front of it: moved by a failover, paused and resumed |
//! | [`Moto`] | `moto_server`, a local Secrets Manager |
//! | [`HttpStub`] | a dependency that answers a fixed status, hangs, sends garbage or closes |
//! | [`EcsMetadata`] | the ECS task metadata endpoint (v4) serving the documented Fargate shape |
//! | [`Service`] | one of the workspace binaries (see [`binary`]), with a clean environment |
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! let pg = harness::Postgres::start()?;
//! let db = pg.create_database()?;
//! let frontend = harness::Service::spawn(
//!     harness::binary("frontend")?,
//!     [
//!         ("DB_HOST", pg.host().to_string()),
//!         ("DB_PORT", pg.port().to_string()),
//!         ("DB_NAME", db),
//!         ("DB_USER", "postgres".to_string()),
//!         ("DB_PASS", pg.superuser_password().to_string()),
//!     ],
//! )?;
//! let body = ureq::get(frontend.url("/health")).call()?.body_mut().read_to_string()?;
//! # Ok(()) }
//! ```

mod aurora;
mod build;
mod database;
pub mod moto;
mod net;
mod service;
mod stub;
mod tls;

pub use aurora::{AfterCommit, AuroraEndpoint, Lifecycle};
pub use build::{binaries, binary};
pub use database::Postgres;
pub use moto::Moto;
pub use net::{free_port, last_lines};
pub use service::{Service, ServiceCommand};
pub use stub::{EcsMetadata, HttpStub, Reply, closed_port_url, ecs_task_metadata_fixture};
pub use tls::TestCa;

use std::path::PathBuf;

/// The root of the Cargo workspace this harness was built in (where `Cargo.toml` and `.venv` live).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .ancestors()
        .nth(2)
        .map(PathBuf::from)
        .unwrap_or(manifest_dir)
}
