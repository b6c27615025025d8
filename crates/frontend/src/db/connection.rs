//! Opening PostgreSQL connections for the pool: credentials (static or from Secrets Manager,
//! re-read when the server rejects the password), TLS, timeouts, schema, prepared statements.
//!
//! A pool-level manager rather than r2d2_postgres because rotation has to happen where
//! connections are opened: when RDS rotates the secret, sessions already open stay valid, and
//! the next new connection fails with SQLSTATE 28P01 — that is the moment to re-read the secret.
//!
//! Aurora's lifecycle shapes the rest. Every connection must reach the writer: right after a
//! failover the cluster endpoint's DNS record (5 s TTL) still names the old writer, which is back
//! as a reader that accepts the login and rejects every write, so a new connection checks
//! `transaction_read_only` (`target_session_attrs=read-write`) and a reader is turned away. And
//! an instance can vanish without a reset: TCP keepalives and TCP_USER_TIMEOUT end such a
//! connection within `DB_TCP_USER_TIMEOUT` instead of the kernel's 15 minutes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use postgres::config::TargetSessionAttrs;
use postgres::error::SqlState;
use postgres::{Client, Statement};
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{CredentialSource, DEFAULT_DB_NAME, DEFAULT_DB_PORT, DatabaseSettings};
use crate::db::pool::Attempts;
use crate::db::schema;
use crate::db::tls::CertificateProblem;
use crate::secrets::{SecretError, SecretsClient};

/// A pooled connection with the statements every request uses, prepared once per connection.
pub struct Connection {
    pub client: Client,
    pub insert_visits: Statement,
    pub recent_visits: Statement,
    /// When a visit batch last used it (see `visits::IDLE_PING_AFTER`).
    pub last_batch: Instant,
    /// Set when a statement showed the session cannot serve (lost, or on a reader): the pool
    /// then closes it instead of reusing it.
    pub unusable: bool,
}

/// Records a batch in one round trip: one statement, committed on its own (no BEGIN/COMMIT), that
/// inserts the visits together with the batch's id. A batch whose answer was lost is looked up by
/// that id; sending the statement again is harmless (`ON CONFLICT` inserts nothing twice, and
/// waits for a first attempt still in progress). Answers the number of visits inserted (all of
/// them, or none if the batch was already stored) and whether the id was still young enough to
/// be sent (`visit_batch_retention.send_within`, by the database's clock): if not, nothing was
/// inserted, because the id may already have been pruned. The age is taken when the statement
/// runs (`clock_timestamp()`, after any wait for a lock), not when it arrived (`now()`).
pub const INSERT_VISITS: &str = "WITH sendable AS (\
     SELECT visit_batch_id_floor(clock_timestamp() - send_within) <= $1 AS yes FROM visit_batch_retention), \
     batch AS (\
     INSERT INTO visit_batch (id) SELECT $1 FROM sendable WHERE yes \
     ON CONFLICT (id) DO NOTHING RETURNING id), \
     inserted AS (\
     INSERT INTO access (last_update, user_agent) \
     SELECT visit.at, visit.user_agent \
     FROM unnest($2::timestamptz[], $3::varchar[]) AS visit (at, user_agent), batch RETURNING 1) \
     SELECT (SELECT count(*) FROM inserted), coalesce((SELECT yes FROM sendable), false)";
pub const RECENT_VISITS: &str =
    "SELECT last_update, user_agent FROM access ORDER BY last_update DESC LIMIT 10";

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("no database host: set DB_HOST or use a secret that carries `host`")]
    NoHost,
    /// Not retried by requests and never the secret's fault: only a configuration change fixes it.
    #[error(
        "the database server {host} presented a certificate that DB_SSLMODE=verify-full rejects: {problem} \
         (trusted: the RDS CA bundle built in, or the CAs in DB_SSLROOTCERT)"
    )]
    ServerCertificate {
        host: String,
        problem: CertificateProblem,
    },
    #[error(transparent)]
    Postgres(#[from] postgres::Error),
    #[error("applying the schema migrations failed: {0}")]
    Migration(String),
}

impl ConnectError {
    fn is_invalid_password(&self) -> bool {
        matches!(self, Self::Postgres(error) if error.code() == Some(&SqlState::INVALID_PASSWORD))
    }
}

/// The connection parameters in force, tagged so concurrent failures trigger one re-read.
struct Target {
    generation: u64,
    config: postgres::Config,
}

impl Target {
    fn host(&self) -> Option<&str> {
        match self.config.get_hosts().first() {
            Some(postgres::config::Host::Tcp(host)) => Some(host),
            _ => None,
        }
    }
}

enum Credentials {
    Static { user: String, password: SecretString },
    Secret(SecretsClient),
}

/// Resolves where and as whom to connect: settings plus, when configured, the secret —
/// read lazily and re-read after a rejected password.
pub struct Targets {
    /// From the environment; a CDK-style secret fills what is unset.
    host: Option<String>,
    port: Option<u16>,
    name: Option<String>,
    credentials: Credentials,
    connect_timeout: Duration,
    statement_timeout: Duration,
    tcp_user_timeout: Duration,
    ssl_mode: postgres::config::SslMode,
    current: RwLock<Option<Arc<Target>>>,
    refresh: Mutex<()>,
}

impl Targets {
    /// Blocking (sets up the Secrets Manager client): call it off the async executor.
    pub fn new(settings: DatabaseSettings, ssl_mode: postgres::config::SslMode) -> std::io::Result<Self> {
        let credentials = match settings.credentials {
            CredentialSource::Static { user, password } => Credentials::Static { user, password },
            CredentialSource::SecretsManager { secret_id } => {
                Credentials::Secret(SecretsClient::new(secret_id)?)
            }
        };
        Ok(Self {
            host: settings.host,
            port: settings.port,
            name: settings.name,
            credentials,
            connect_timeout: settings.connect_timeout,
            statement_timeout: settings.statement_timeout,
            tcp_user_timeout: settings.tcp_user_timeout,
            ssl_mode,
            current: RwLock::new(None),
            refresh: Mutex::new(()),
        })
    }

    /// Host and port connections go to (reads the secret if that has not happened yet).
    pub fn endpoint(&self) -> Result<(String, u16), ConnectError> {
        let target = self.current()?;
        Ok((
            target.host().ok_or(ConnectError::NoHost)?.to_owned(),
            target
                .config
                .get_ports()
                .first()
                .copied()
                .unwrap_or(DEFAULT_DB_PORT),
        ))
    }

    fn can_reload(&self) -> bool {
        matches!(self.credentials, Credentials::Secret(_))
    }

    fn current(&self) -> Result<Arc<Target>, ConnectError> {
        let cached = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match cached {
            Some(target) => Ok(target),
            None => self.load(None),
        }
    }

    /// Builds the target from the settings and (re-)reads the secret. `stale` is the target a
    /// failed attempt used: if another thread has already replaced it, that result is reused,
    /// so a burst of rejected connections costs one Secrets Manager call.
    fn load(&self, stale: Option<&Target>) -> Result<Arc<Target>, ConnectError> {
        let _single_flight = self.refresh.lock().unwrap_or_else(PoisonError::into_inner);
        let cached = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(target) = cached
            && stale.is_none_or(|stale| target.generation != stale.generation)
        {
            return Ok(target);
        }
        let generation = stale.map_or(0, |stale| stale.generation + 1);
        let target = Arc::new(Target {
            generation,
            config: self.build_config()?,
        });
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&target));
        Ok(target)
    }

    fn build_config(&self) -> Result<postgres::Config, ConnectError> {
        let mut config = postgres::Config::new();
        let (host, port, name) = match &self.credentials {
            Credentials::Static { user, password } => {
                config.user(user).password(password.expose_secret());
                (self.host.clone(), self.port, self.name.clone())
            }
            Credentials::Secret(secrets) => {
                let secret = secrets.fetch()?;
                tracing::info!(
                    secret_id = secrets.secret_id(),
                    "database credentials read from Secrets Manager"
                );
                config
                    .user(&secret.username)
                    .password(secret.password.expose_secret());
                // The environment wins; the secret fills what it leaves unset (CDK-style secrets).
                (
                    self.host.clone().or(secret.host),
                    self.port.or(secret.port),
                    self.name.clone().or(secret.dbname),
                )
            }
        };
        config
            .host(&host.ok_or(ConnectError::NoHost)?)
            .port(port.unwrap_or(DEFAULT_DB_PORT))
            .dbname(name.as_deref().unwrap_or(DEFAULT_DB_NAME))
            .application_name("frontend")
            .connect_timeout(self.connect_timeout)
            .target_session_attrs(TargetSessionAttrs::ReadWrite)
            .tcp_user_timeout(self.tcp_user_timeout)
            // Probes from half the timeout on, one every tenth (the kernel counts whole seconds,
            // and refuses 0): TCP_USER_TIMEOUT ends the connection once the peer has been silent
            // that long, probes unanswered.
            .keepalives(true)
            .keepalives_idle(self.tcp_user_timeout / 2)
            .keepalives_interval((self.tcp_user_timeout / 10).max(Duration::from_secs(1)))
            .keepalives_retries(5)
            .ssl_mode(self.ssl_mode)
            .options(&format!(
                "-c statement_timeout={}",
                self.statement_timeout.as_millis()
            ));
        Ok(config)
    }
}

pub struct ConnectionManager {
    targets: Arc<Targets>,
    tls: MakeRustlsConnect,
    schema_ready: AtomicBool,
    attempts: Arc<Attempts>,
}

impl ConnectionManager {
    /// No I/O: credentials are read and the schema applied on the first connection. Every
    /// attempt is counted in `attempts`.
    pub fn new(targets: Arc<Targets>, tls: MakeRustlsConnect, attempts: Arc<Attempts>) -> Self {
        Self {
            targets,
            tls,
            schema_ready: AtomicBool::new(false),
            attempts,
        }
    }

    fn open(&self, target: &Target) -> Result<Connection, ConnectError> {
        let mut client =
            target.config.connect(self.tls.clone()).map_err(|error| {
                match CertificateProblem::of(&error) {
                    Some(problem) => ConnectError::ServerCertificate {
                        host: target.host().unwrap_or_default().to_owned(),
                        problem,
                    },
                    None => ConnectError::Postgres(error),
                }
            })?;
        if !self.schema_ready.load(Ordering::Acquire) {
            schema::migrate(&mut client).map_err(ConnectError::Migration)?;
            self.schema_ready.store(true, Ordering::Release);
        }
        let insert_visits = client.prepare(INSERT_VISITS)?;
        let recent_visits = client.prepare(RECENT_VISITS)?;
        Ok(Connection {
            client,
            insert_visits,
            recent_visits,
            last_batch: Instant::now(),
            unusable: false,
        })
    }
}

impl r2d2::ManageConnection for ConnectionManager {
    type Connection = Connection;
    type Error = ConnectError;

    fn connect(&self) -> Result<Connection, ConnectError> {
        self.attempts.track(|| {
            let target = self.targets.current()?;
            match self.open(&target) {
                Err(error) if error.is_invalid_password() && self.targets.can_reload() => {
                    tracing::warn!("database rejected the password; re-reading the secret (rotation)");
                    let fresh = self.targets.load(Some(&target))?;
                    self.open(&fresh)
                }
                result => result,
            }
        })
    }

    fn is_valid(&self, connection: &mut Connection) -> Result<(), ConnectError> {
        connection
            .client
            .simple_query("")
            .map(drop)
            .map_err(ConnectError::from)
    }

    fn has_broken(&self, connection: &mut Connection) -> bool {
        connection.unusable || connection.client.is_closed()
    }
}

/// Logs connection failures where they happen (the pool only reports a timeout to callers).
#[derive(Debug)]
pub struct LogConnectErrors;

impl r2d2::HandleError<ConnectError> for LogConnectErrors {
    fn handle_error(&self, error: ConnectError) {
        match error {
            ConnectError::ServerCertificate { .. } => tracing::error!("{error}"),
            error => {
                tracing::warn!(error = %super::error_chain(&error), "opening a database connection failed")
            }
        }
    }
}
