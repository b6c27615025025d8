//! The public frontend: records visits in PostgreSQL, reads them back, calls the private ECS
//! service, and tests reachability — all synchronous I/O run off the async executor.

pub mod api;
pub mod config;
pub mod db;
pub mod secrets;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use poem::Endpoint;

pub use config::{Config, Settings};

use crate::db::{Database, DatabaseSetupError};

/// Builds the application from validated settings. Makes no network call: a paused or
/// unreachable database must not keep the service from starting and passing its health check.
pub async fn build(settings: &mut Settings) -> Result<impl Endpoint + 'static, DatabaseSetupError> {
    let database = match settings.database.take() {
        Some(db_settings) => {
            let database = tokio::task::spawn_blocking(move || Database::new(db_settings))
                .await
                .map_err(|join_error| DatabaseSetupError::Threads(std::io::Error::other(join_error)))??;
            let database = Arc::new(database);
            database.warm_up();
            Some(database)
        }
        None => {
            tracing::warn!("no database configured (DB_HOST / DBSECRETSNAME): visit routes answer 503");
            None
        }
    };
    Ok(api::app(settings, database))
}

pub async fn run(mut settings: Settings) -> anyhow::Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, settings.port));
    let app = build(&mut settings).await?;
    service_kit::serve(app, addr).await
}
