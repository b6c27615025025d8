//! The public frontend: records visits in PostgreSQL, reads them back, calls the private ECS
//! service, and tests reachability — all synchronous I/O run off the async executor.

pub mod api;
pub mod config;
pub mod db;
pub mod secrets;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use poem::Endpoint;

pub use config::{Config, Settings};

use crate::db::{Database, DatabaseSetupError};

/// After the drain (20 s of ECS's and App Runner's 30 s before SIGKILL), how long visit batches
/// whose outcome is not known yet may still take before the process exits without them.
const UNANSWERED_BATCHES_WAIT: Duration = Duration::from_secs(8);

/// Builds the application, and the database handle it uses (if one is configured). Makes no
/// network call: a paused or unreachable database must not keep the service from starting and
/// passing its health check.
pub async fn build(
    settings: &mut Settings,
) -> Result<(impl Endpoint + 'static, Option<Arc<Database>>), DatabaseSetupError> {
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
    Ok((api::app(settings, database.clone()), database))
}

pub async fn run(mut settings: Settings) -> anyhow::Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, settings.port));
    let (app, database) = build(&mut settings).await?;
    // No linger: App Runner and Express Mode's load balancer stop sending before SIGTERM.
    let served = service_kit::serve(app, addr, Duration::ZERO).await;
    if let Some(database) = database {
        tokio::task::spawn_blocking(move || database.finish(UNANSWERED_BATCHES_WAIT)).await?;
    }
    served
}
