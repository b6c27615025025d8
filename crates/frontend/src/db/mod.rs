//! PostgreSQL: a connection pool (r2d2) driven from blocking threads, since the synchronous
//! `postgres` client must never run on an async worker.

mod connection;
mod pool;
mod schema;
mod tls;
mod visits;

use std::sync::Arc;

pub use connection::{INSERT_VISITS, RECENT_VISITS};
pub use tls::TlsError;
pub use visits::Visit;

use crate::config::DatabaseSettings;
use connection::{ConnectionManager, LogConnectErrors, Targets};
use pool::{Attempts, Pool};
use visits::{VisitReader, VisitWriter};

/// Runs `work` on a pooled connection, and again on another one if the session cannot serve:
/// lost (a restart, a failover, an ended session, rotation, a vanished instance) or read-only (a
/// writer turned reader by a failover). That is safe because `work` is idempotent: reads commit
/// nothing, and a visit batch is stored at most once however often its statement is sent (see
/// `visits`). Each retry closes the session that failed, so at most pool-size retries happen, and
/// a pool full of dead sessions costs no request a failure.
fn with_connection<T>(
    pool: &Pool,
    doing: &str,
    mut work: impl FnMut(&mut connection::Connection) -> Result<T, postgres::Error>,
) -> Result<T, DbError> {
    let mut retries_left = pool.max_size();
    loop {
        let mut connection = pool.get().map_err(|error| {
            tracing::warn!(error = %error_chain(&error), "no database connection for {doing}");
            DbError::Unavailable
        })?;
        match work(&mut connection) {
            Err(error) if retries_left > 0 && session_cannot_serve(&error) => {
                tracing::info!(error = %error_chain(&error), "database session unusable; retrying {doing} on another");
                connection.unusable = true;
                retries_left -= 1;
            }
            result => return result.map_err(|error| DbError::from_statement(&error, doing)),
        }
    }
}

fn session_cannot_serve(error: &postgres::Error) -> bool {
    connection_was_lost(error) || is_read_only(error)
}

/// The server rejected a write because this session is on a reader: a statement rejected this
/// way stored nothing. New connections are checked at login (`target_session_attrs`); this one
/// was opened before its server turned reader.
fn is_read_only(error: &postgres::Error) -> bool {
    error.code() == Some(&postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION)
}

/// The session is over: the server ended it (a FATAL or PANIC, whatever its SQLSTATE — a
/// restart, a terminated backend, a failed WAL flush) or the socket is gone. A statement sent on
/// it may have committed before the end.
fn connection_was_lost(error: &postgres::Error) -> bool {
    use postgres::error::{Severity, SqlState};
    // The non-localised severity (`V`), else the localised one (`S`): a proxy may send only that.
    let fatal = |db: &postgres::error::DbError| match db.parsed_severity() {
        Some(severity) => matches!(severity, Severity::Fatal | Severity::Panic),
        None => matches!(db.severity(), "FATAL" | "PANIC"),
    };
    let ended_by_server = error.as_db_error().is_some_and(fatal)
        || error
            .code()
            .is_some_and(|code| *code == SqlState::ADMIN_SHUTDOWN || *code == SqlState::CRASH_SHUTDOWN);
    let socket_gone = std::error::Error::source(error).is_some_and(|cause| cause.is::<std::io::Error>());
    ended_by_server || error.is_closed() || socket_gone
}

/// Why a database operation did not happen. The client only learns that the database is
/// unavailable; the cause is logged where it occurs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DbError {
    #[error("the database is not configured")]
    NotConfigured,
    #[error("the database is unavailable")]
    Unavailable,
    #[error("the database did not complete the statement in time")]
    Timeout,
    #[error("the database statement failed")]
    Failed,
    /// A write whose answer was lost, and the database could not be asked in time whether it
    /// took effect: it may have. Only a visit's write ends this way.
    #[error("the database did not confirm whether the write took effect")]
    OutcomeUnknown,
}

impl DbError {
    fn from_statement(error: &postgres::Error, doing: &str) -> Self {
        use postgres::error::SqlState;
        tracing::warn!(error = %error_chain(error), "{doing} failed");
        match error.code() {
            Some(code) if *code == SqlState::QUERY_CANCELED => Self::Timeout,
            Some(_) => Self::Failed,
            None => Self::Unavailable, // connection-level: closed, reset, I/O
        }
    }
}

/// An error and its causes on one line: driver errors keep the useful part in their sources
/// ("error connecting to server" alone does not say "connection refused").
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub struct Database {
    pool: Pool,
    targets: Arc<Targets>,
    writer: VisitWriter,
    reader: VisitReader,
}

impl Database {
    /// Sets up the pool and the visit writers without touching the network, so the service is
    /// ready at once; credentials, TLS handshake and migrations happen on the first connection.
    /// Blocking (it sets up the Secrets Manager client's runtime): call it off the async executor.
    pub fn new(settings: DatabaseSettings) -> Result<Self, DatabaseSetupError> {
        let (tls, ssl_mode) = tls::connector(&settings.tls)?;
        let (pool_size, writers, max_batch) = (settings.pool_size, settings.writers, settings.max_batch);
        // A batch whose answer an outage cut off is resolved once the database is back, given as
        // long as a connection attempt may take (which is sized for Aurora resuming).
        let (connect_timeout, acquire_timeout) = (settings.connect_timeout, settings.acquire_timeout);
        let resolve_batch_within = connect_timeout;
        let idle_timeout = settings.idle_timeout;
        let targets = Arc::new(Targets::new(settings, ssl_mode).map_err(DatabaseSetupError::Threads)?);
        let attempts = Arc::new(Attempts::default());
        let manager = ConnectionManager::new(Arc::clone(&targets), tls, Arc::clone(&attempts));
        let pool = r2d2::Pool::builder()
            .max_size(pool_size)
            // No idle minimum: with no traffic every connection closes and Aurora can pause.
            .min_idle(Some(0))
            .idle_timeout(Some(idle_timeout))
            .connection_timeout(acquire_timeout)
            // A dead connection shows as a failed statement (dropped by `has_broken`); a probe
            // query on every checkout would cost a round trip per request.
            .test_on_check_out(false)
            .error_handler(Box::new(LogConnectErrors))
            .build_unchecked(manager);
        let pool = Pool::new(pool, attempts, acquire_timeout, connect_timeout);
        let writer = VisitWriter::start(pool.clone(), writers, max_batch, resolve_batch_within)
            .map_err(DatabaseSetupError::Threads)?;
        // The connections the writers leave (validation keeps at least one).
        let reader =
            VisitReader::start(pool.clone(), pool_size - writers).map_err(DatabaseSetupError::Threads)?;
        Ok(Self {
            pool,
            targets,
            writer,
            reader,
        })
    }

    /// Commits one visit; returns once it is durable.
    pub async fn record_visit(&self, visit: Visit) -> Result<(), DbError> {
        self.writer.record(visit).await
    }

    /// For the end of the process, once no request waits any more: gives the visit batches whose
    /// outcome is not known yet up to `within` to be answered, and logs each one that is not.
    /// Blocking: call it off the async executor.
    pub fn finish(&self, within: std::time::Duration) {
        self.writer.finish(within);
    }

    /// The ten newest visits, read after this call began (concurrent calls share one query).
    pub async fn recent_visits(&self) -> Result<Vec<Visit>, DbError> {
        self.reader.recent().await.map(|visits| visits.to_vec())
    }

    /// Where the database is, as connections see it: the environment, or a CDK-style secret.
    /// Blocking (may read the secret): call it off the async executor.
    pub fn endpoint(&self) -> Option<(String, u16)> {
        self.targets
            .endpoint()
            .inspect_err(|error| tracing::warn!(error = %error_chain(error), "database endpoint unknown"))
            .ok()
    }

    /// Opens one connection in the background so the secret, TLS and migrations are dealt with
    /// before the first request; a failure is only logged (the database may be resuming).
    pub fn warm_up(self: &Arc<Self>) {
        let database = Arc::clone(self);
        tokio::task::spawn_blocking(move || match database.pool.get() {
            Ok(_) => tracing::info!("database reachable, schema up to date"),
            Err(error) => tracing::warn!(%error, "database not reachable yet; requests will retry"),
        });
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DatabaseSetupError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("starting the database threads: {0}")]
    Threads(std::io::Error),
}
