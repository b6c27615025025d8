//! Configuration: flags or environment variables (the names App Runner and the original used),
//! validated once at start into [`Settings`] with errors that name the variable.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};
use secrecy::SecretString;

/// Public API on App Runner: records visits in PostgreSQL and reaches a private ECS service.
///
/// Every option can also be given as the environment variable shown; values in errors are
/// named after those variables.
#[derive(Debug, Parser)]
#[command(name = "frontend", version)]
pub struct Config {
    /// Port to listen on (all interfaces).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// Set (to anything) when running on App Runner; makes DB_SSLMODE default to `verify-full`.
    #[arg(long, env = "APPRUNNERSERVICE", value_name = "APPRUNNERSERVICE")]
    pub apprunner_service: Option<String>,

    /// Most threads for blocking calls: the private service and the connection test. Database
    /// work has threads of its own (DB_WRITERS, and the readers DB_POOL_SIZE - DB_WRITERS).
    ///
    /// A call holds its thread up to its own timeout, so fewer threads than concurrent calls
    /// would make calls queue past their deadline: 100 is App Runner's default per-instance
    /// concurrency. Measured (tests/bench, 64 connections on /ecs-private-service, glibc): each
    /// thread in use costs RSS (per-thread malloc arenas): peak 27 MiB with 8 threads, 30 with
    /// 16, 44 with 64, 60 with 128 or tokio's default 512; throughput did not grow past 16.
    #[arg(long, env = "BLOCKING_THREADS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub blocking_threads: u32,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub private_service: PrivateServiceArgs,

    #[command(flatten)]
    pub connectivity: ConnectivityArgs,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Database")]
pub struct DatabaseArgs {
    /// Secrets Manager secret (name or ARN) holding the DB credentials: the RDS-managed shape
    /// {"username","password"} or the CDK shape that also carries host, port and dbname.
    #[arg(long, env = "DBSECRETSNAME", value_name = "DBSECRETSNAME")]
    pub db_secret_name: Option<String>,

    /// Database host. Unset and no secret: the database routes answer 503.
    #[arg(long, env = "DB_HOST")]
    pub db_host: Option<String>,

    /// Database port [default: 5432, or the secret's]
    #[arg(long, env = "DB_PORT")]
    pub db_port: Option<u16>,

    /// Database name [default: apprunnerdemo, or the secret's]
    #[arg(long, env = "DB_NAME")]
    pub db_name: Option<String>,

    /// Database user, for local runs without DBSECRETSNAME.
    #[arg(long, env = "DB_USER")]
    pub db_user: Option<String>,

    /// Database password, for local runs without DBSECRETSNAME.
    #[arg(long, env = "DB_PASS", hide_env_values = true)]
    pub db_pass: Option<SecretString>,

    /// TLS to the database [default: verify-full when APPRUNNERSERVICE is set, else disable]
    #[arg(long, env = "DB_SSLMODE", value_enum)]
    pub db_sslmode: Option<SslMode>,

    /// CA certificates (PEM) that `verify-full` trusts instead of the built-in RDS CA bundle:
    /// a test CA, a newer bundle, or a region the built-in one does not cover (GovCloud, China).
    #[arg(long, env = "DB_SSLROOTCERT")]
    pub db_sslrootcert: Option<PathBuf>,

    /// Connections in the pool: DB_WRITERS for the visit writers, the rest for the threads that
    /// answer /recent-visits (each query serves every read queued before it started).
    /// Measured (tests/bench, 64 connections): 2 reader connections gave 0.5-0.85x pgbench's
    /// rate for the same SELECT; the reads are bound by the HTTP path, not by connections.
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub db_pool_size: u32,

    /// Threads that write visits, each committing a batch of concurrent visits per transaction.
    /// Measured (tests/bench, 64 connections, durable commits, a busy 2-core machine): 1 writer
    /// 0.91-0.95x pgbench's single-row INSERT rate, 2 writers 0.94-1.03x, 4 writers 1.01x;
    /// 2 kept so one slow batch does not hold up every visit.
    #[arg(long, env = "DB_WRITERS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub db_writers: u32,

    /// Most visits committed in one transaction. Measured batches averaged 5 rows at 16
    /// connections, 14-17 at 64 and 20-30 at 256: the limit only bounds one statement's size.
    #[arg(long, env = "DB_MAX_BATCH", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub db_max_batch: u32,

    /// Deadline for the TCP connect of a new connection, and how long a request waits for a
    /// connection that is being opened: Aurora Serverless v2 resuming from 0 ACU holds new
    /// connections until it has resumed (about 15 s), so this must be longer than that.
    #[arg(long, env = "DB_CONNECT_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub db_connect_timeout: Duration,

    /// How long a request waits for a pooled connection before answering 503 when none is being
    /// opened: every connection busy, or the database refusing them (stopped, rebooting, a reader).
    #[arg(long, env = "DB_ACQUIRE_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub db_acquire_timeout: Duration,

    /// A connection whose sent data stays unacknowledged this long is given up (TCP_USER_TIMEOUT),
    /// and an idle one is probed by TCP keepalives from half of it on: an instance that vanished
    /// without a reset is noticed within about this, not after the kernel's 15 minutes.
    #[arg(long, env = "DB_TCP_USER_TIMEOUT", default_value = "10s", value_parser = parse_tcp_user_timeout)]
    pub db_tcp_user_timeout: Duration,

    /// Server-side limit on each statement (PostgreSQL `statement_timeout`), from 1ms to 60s: a
    /// statement must end well within the gap between how long visit batch ids are kept and how
    /// long they may be sent (table visit_batch_retention, 10 and 5 minutes).
    #[arg(long, env = "DB_STATEMENT_TIMEOUT", default_value = "5s", value_parser = parse_statement_timeout)]
    pub db_statement_timeout: Duration,

    /// Idle pooled connections are closed after this, so Aurora can pause when traffic stops.
    #[arg(long, env = "DB_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub db_idle_timeout: Duration,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Private service")]
pub struct PrivateServiceArgs {
    /// Base URL of the private ECS service, e.g. http://privateservice.apprunner.demo:8080
    #[arg(long, env = "ECSPRIVATESERVICE", value_name = "ECSPRIVATESERVICE")]
    pub ecs_private_service: Option<String>,

    /// Deadline for the private service's answer; past it the route answers 504.
    #[arg(long, env = "ECSPRIVATESERVICE_TIMEOUT", value_name = "ECSPRIVATESERVICE_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub ecs_private_service_timeout: Duration,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Connection test")]
pub struct ConnectivityArgs {
    /// Host that /test-connection tries to reach [default: DB_HOST]
    #[arg(long, env = "TARGET")]
    pub target: Option<String>,

    /// Port that /test-connection tries to reach [default: DB_PORT]
    #[arg(long, env = "TARGETPORT", value_name = "TARGETPORT")]
    pub target_port: Option<u16>,

    /// Deadline for the TCP connection test.
    #[arg(long, env = "TARGET_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub target_timeout: Duration,
}

/// TCP_USER_TIMEOUT counts whole milliseconds and 0 means the kernel's default (minutes), and
/// keepalives count whole seconds: at least 2 s, so that the keepalive idle time (half of it) is
/// at least a second.
fn parse_tcp_user_timeout(text: &str) -> Result<Duration, String> {
    let timeout = humantime::parse_duration(text).map_err(|error| error.to_string())?;
    if timeout < Duration::from_secs(2) {
        return Err("must be at least 2s".to_owned());
    }
    Ok(timeout)
}

/// 0 would mean no limit at all in PostgreSQL.
fn parse_statement_timeout(text: &str) -> Result<Duration, String> {
    let timeout = humantime::parse_duration(text).map_err(|error| error.to_string())?;
    if timeout < Duration::from_millis(1) || timeout > Duration::from_secs(60) {
        return Err("must be from 1ms to 60s".to_owned());
    }
    Ok(timeout)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SslMode {
    /// No TLS (local runs only: Aurora PostgreSQL refuses unencrypted clients).
    Disable,
    /// TLS without verifying the server certificate (as libpq's `require`).
    Require,
    /// TLS, the certificate checked against the RDS CA bundle built in (or DB_SSLROOTCERT) and
    /// the host name.
    VerifyFull,
}

/// The validated configuration the service runs with.
#[derive(Debug)]
pub struct Settings {
    pub port: u16,
    pub blocking_threads: usize,
    pub database: Option<DatabaseSettings>,
    pub private_service: Option<String>,
    pub private_service_timeout: Duration,
    pub connection_test: ConnectionTestSettings,
}

#[derive(Debug)]
pub struct DatabaseSettings {
    /// Host, port and name from the environment; a CDK-style secret fills what is unset.
    pub host: Option<String>,
    pub port: Option<u16>,
    pub name: Option<String>,
    pub credentials: CredentialSource,
    pub tls: TlsSettings,
    pub pool_size: u32,
    pub writers: u32,
    pub max_batch: usize,
    pub connect_timeout: Duration,
    pub acquire_timeout: Duration,
    pub statement_timeout: Duration,
    pub idle_timeout: Duration,
    pub tcp_user_timeout: Duration,
}

pub const DEFAULT_DB_PORT: u16 = 5432;
pub const DEFAULT_DB_NAME: &str = "apprunnerdemo";

#[derive(Debug)]
pub enum CredentialSource {
    Static { user: String, password: SecretString },
    SecretsManager { secret_id: String },
}

#[derive(Debug, Clone)]
pub enum TlsSettings {
    Disable,
    Require,
    VerifyFull { roots: TrustedRoots },
}

/// The certificate authorities `verify-full` accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustedRoots {
    /// Amazon's RDS global CA bundle, compiled into the binary (see `certs/README.md`).
    RdsBundle,
    /// DB_SSLROOTCERT: these and no others.
    File(PathBuf),
}

#[derive(Debug)]
pub struct ConnectionTestSettings {
    /// TARGET; unset means the database endpoint (from DB_HOST or the secret).
    pub host: Option<String>,
    pub port: u16,
    pub timeout: Duration,
}

/// A configuration mistake, naming the variable to fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("DB_USER and DB_PASS are required when DB_HOST is set and DBSECRETSNAME is not")]
    MissingStaticCredentials,
    #[error("DB_SSLROOTCERT {0} is not a readable file")]
    UnreadableRootCert(String),
    #[error(
        "DB_WRITERS ({writers}) must be less than DB_POOL_SIZE ({pool_size}) so reads still get a connection"
    )]
    WritersExhaustPool { writers: u32, pool_size: u32 },
    #[error(
        "DB_ACQUIRE_TIMEOUT ({acquire:?}) must not be longer than DB_CONNECT_TIMEOUT ({connect:?}): a request waits \
         for a connection being opened up to DB_CONNECT_TIMEOUT"
    )]
    AcquireLongerThanConnect { acquire: Duration, connect: Duration },
    #[error("ECSPRIVATESERVICE must be an http:// or https:// URL, got {0:?}")]
    InvalidPrivateServiceUrl(String),
}

impl Config {
    /// Parses `args` (and the environment, as in production) and validates them; for tests and
    /// embedders. The binary uses clap's own `parse`, which prints help and usage errors.
    pub fn try_parse_from_args(args: &[&str]) -> anyhow::Result<Settings> {
        Ok(Self::try_parse_from(args)?.validate()?)
    }

    pub fn validate(self) -> Result<Settings, ConfigError> {
        let db = self.database;
        let on_app_runner = self.apprunner_service.is_some_and(|value| !value.is_empty());

        let connection_test = ConnectionTestSettings {
            host: self.connectivity.target,
            port: self
                .connectivity
                .target_port
                .or(db.db_port)
                .unwrap_or(DEFAULT_DB_PORT),
            timeout: self.connectivity.target_timeout,
        };

        let credentials = match (db.db_secret_name, db.db_user, db.db_pass) {
            (Some(secret_id), _, _) => Some(CredentialSource::SecretsManager { secret_id }),
            (None, Some(user), Some(password)) => Some(CredentialSource::Static { user, password }),
            (None, _, _) if db.db_host.is_some() => {
                return Err(ConfigError::MissingStaticCredentials);
            }
            (None, _, _) => None,
        };

        // Aurora is reached across the VPC: on App Runner, authenticate it, not only encrypt.
        let default_mode = if on_app_runner {
            SslMode::VerifyFull
        } else {
            SslMode::Disable
        };
        let tls = match (db.db_sslmode.unwrap_or(default_mode), db.db_sslrootcert) {
            (SslMode::Disable, _) => TlsSettings::Disable,
            (SslMode::Require, _) => TlsSettings::Require,
            (SslMode::VerifyFull, None) => TlsSettings::VerifyFull {
                roots: TrustedRoots::RdsBundle,
            },
            (SslMode::VerifyFull, Some(path)) if !path.is_file() => {
                return Err(ConfigError::UnreadableRootCert(path.display().to_string()));
            }
            (SslMode::VerifyFull, Some(path)) => TlsSettings::VerifyFull {
                roots: TrustedRoots::File(path),
            },
        };

        if db.db_acquire_timeout > db.db_connect_timeout {
            return Err(ConfigError::AcquireLongerThanConnect {
                acquire: db.db_acquire_timeout,
                connect: db.db_connect_timeout,
            });
        }

        if db.db_writers >= db.db_pool_size {
            return Err(ConfigError::WritersExhaustPool {
                writers: db.db_writers,
                pool_size: db.db_pool_size,
            });
        }

        let database = credentials.map(|credentials| DatabaseSettings {
            host: db.db_host,
            port: db.db_port,
            name: db.db_name,
            credentials,
            tls,
            pool_size: db.db_pool_size,
            writers: db.db_writers,
            max_batch: db.db_max_batch as usize,
            connect_timeout: db.db_connect_timeout,
            acquire_timeout: db.db_acquire_timeout,
            statement_timeout: db.db_statement_timeout,
            idle_timeout: db.db_idle_timeout,
            tcp_user_timeout: db.db_tcp_user_timeout,
        });

        let private_service = match self.private_service.ecs_private_service {
            Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                return Err(ConfigError::InvalidPrivateServiceUrl(url));
            }
            other => other.map(|url| url.trim_end_matches('/').to_owned()),
        };

        Ok(Settings {
            port: self.port,
            blocking_threads: self.blocking_threads as usize,
            database,
            private_service,
            private_service_timeout: self.private_service.ecs_private_service_timeout,
            connection_test,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> Result<Settings, ConfigError> {
        let mut argv = vec!["frontend"];
        argv.extend_from_slice(args);
        Config::try_parse_from(argv).expect("arguments parse").validate()
    }

    #[test]
    fn runs_without_a_database_so_health_works_anywhere() {
        let settings = settings(&[]).expect("valid");
        assert_eq!(settings.port, 8080);
        assert!(settings.database.is_none());
        assert!(settings.connection_test.host.is_none());
    }

    #[test]
    fn a_host_without_credentials_names_the_missing_variables() {
        let error = settings(&["--db-host", "db"]).expect_err("needs credentials");
        assert_eq!(error, ConfigError::MissingStaticCredentials);
        assert!(error.to_string().contains("DB_USER"));
    }

    #[test]
    fn tls_defaults_to_verify_full_on_app_runner_and_disable_elsewhere() {
        let local = settings(&["--db-host", "db", "--db-user", "u", "--db-pass", "p"]).expect("valid");
        assert!(matches!(
            local.database.expect("configured").tls,
            TlsSettings::Disable
        ));
        let aws = settings(&["--apprunner-service", "yes", "--db-secret-name", "s"]).expect("valid");
        assert!(matches!(
            aws.database.expect("configured").tls,
            TlsSettings::VerifyFull {
                roots: TrustedRoots::RdsBundle
            }
        ));
    }

    #[test]
    fn verify_full_trusts_the_rds_bundle_unless_a_readable_file_replaces_it() {
        let base = ["--db-secret-name", "s", "--db-sslmode", "verify-full"];
        let built_in = settings(&base).expect("the built-in bundle needs no file");
        assert!(matches!(
            built_in.database.expect("configured").tls,
            TlsSettings::VerifyFull {
                roots: TrustedRoots::RdsBundle
            }
        ));
        let mut with_missing = base.to_vec();
        with_missing.extend(["--db-sslrootcert", "/nonexistent/rds.pem"]);
        assert!(
            settings(&with_missing)
                .expect_err("missing file")
                .to_string()
                .contains("DB_SSLROOTCERT")
        );
        let bundle = concat!(env!("CARGO_MANIFEST_DIR"), "/certs/rds-global-bundle.pem");
        let mut with_file = base.to_vec();
        with_file.extend(["--db-sslrootcert", bundle]);
        assert!(matches!(
            settings(&with_file).expect("a readable file").database.expect("configured").tls,
            TlsSettings::VerifyFull { roots: TrustedRoots::File(path) } if path.ends_with("rds-global-bundle.pem")
        ));
    }

    #[test]
    fn connection_test_port_defaults_to_the_database_port() {
        let settings = settings(&["--target", "db.internal", "--db-port", "6432"]).expect("valid");
        assert_eq!(settings.connection_test.host.as_deref(), Some("db.internal"));
        assert_eq!(settings.connection_test.port, 6432);
    }

    #[test]
    fn writers_must_leave_connections_for_readers() {
        let error = settings(&[
            "--db-secret-name",
            "s",
            "--db-pool-size",
            "2",
            "--db-writers",
            "2",
        ])
        .expect_err("no reader connection");
        assert!(error.to_string().contains("DB_WRITERS"));
    }

    #[test]
    fn rejects_a_private_service_address_that_is_not_a_url() {
        let error = settings(&["--ecs-private-service", "privateservice:8080"]).expect_err("no scheme");
        assert!(error.to_string().contains("ECSPRIVATESERVICE"));
    }

    #[test]
    fn a_request_never_waits_for_a_connection_longer_than_the_connect_timeout() {
        let error = settings(&["--db-acquire-timeout", "30s"]).expect_err("30 s > the 20 s default");
        assert!(error.to_string().contains("DB_ACQUIRE_TIMEOUT"), "{error}");
        assert!(settings(&["--db-acquire-timeout", "20s"]).is_ok());
    }

    #[test]
    fn a_statement_timeout_of_none_or_minutes_is_refused() {
        for (value, refused) in [("0s", true), ("61s", true), ("1ms", false), ("60s", false)] {
            let parsed = Config::try_parse_from(["frontend", "--db-statement-timeout", value]);
            assert_eq!(parsed.is_err(), refused, "{value}");
        }
    }

    #[test]
    fn a_tcp_user_timeout_too_short_for_keepalives_is_refused() {
        let error =
            Config::try_parse_from(["frontend", "--db-tcp-user-timeout", "500ms"]).expect_err("too short");
        assert!(error.to_string().contains("DB_TCP_USER_TIMEOUT"), "{error}");
        assert!(error.to_string().contains("at least 2s"), "{error}");
    }

    #[test]
    fn malformed_values_are_refused_naming_the_variable() {
        let error =
            Config::try_parse_from(["frontend", "--db-statement-timeout", "soon"]).expect_err("bad duration");
        assert!(error.to_string().contains("DB_STATEMENT_TIMEOUT"), "{error}");
    }
}
