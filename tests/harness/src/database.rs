//! A throwaway PostgreSQL cluster: `initdb` into a temporary directory, `pg_ctl start` on
//! `127.0.0.1:<free port>`, `pg_ctl stop -m immediate` and removal on drop.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tempfile::TempDir;

use crate::net::{find_in_path, free_port, is_executable, random_token, tail};

mod replication;

const INSTALL_HINT: &str = "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found: \
     install them with `apt-get install -y postgresql` (Debian/Ubuntu), or point $PG_BIN at the \
     directory that holds them";

/// Databases made by [`Postgres::create_database`] are numbered across the whole test process.
static NEXT_DATABASE: AtomicUsize = AtomicUsize::new(1);

/// A running, throwaway PostgreSQL server.
///
/// * listens on `127.0.0.1:<free port>` and on a unix socket in its own temporary directory;
/// * superuser `postgres` with a random password ([`superuser_password`](Self::superuser_password)),
///   `scram-sha-256` over TCP, `trust` over the unix socket;
/// * tuned for tests (`fsync=off`; commits still survive a crash of the server) with `max_connections = 300`;
/// * binaries from `$PG_BIN`, else `$PATH`, else the newest `/usr/lib/postgresql/*/bin`;
/// * as root, the cluster belongs to the `postgres` user and every tool runs through
///   `runuser -u postgres --` (`initdb` refuses root); as any other user, tools run directly.
///
/// Dropping it stops the server (immediate shutdown) and removes every file.
///
/// The methods that talk SQL ([`create_database`](Self::create_database), [`create_role`](Self::create_role),
/// ...) run on a short-lived thread of their own, so they are safe inside `#[tokio::test]`.
/// [`admin_client`](Self::admin_client) returns a blocking `postgres::Client`: from async code,
/// use it inside `tokio::task::spawn_blocking`.
pub struct Postgres {
    dir: TempDir,
    bin: PathBuf,
    /// Run the tools as the `postgres` user (we are root).
    as_postgres_user: Option<(u32, u32)>,
    port: u16,
    password: String,
    ca_cert: Option<PathBuf>,
    running: bool,
    /// Settings beyond the harness's own, e.g. a standby's `primary_conninfo`.
    extra_settings: Vec<String>,
}

impl Postgres {
    /// Starts a fresh cluster without TLS.
    pub fn start() -> Result<Self> {
        Self::start_inner(None)
    }

    /// Starts a fresh cluster with `ssl = on`: its server certificate (for `localhost` and
    /// `127.0.0.1`) is issued by a throwaway CA whose certificate is at
    /// [`ca_cert_path`](Self::ca_cert_path). Plain connections are still accepted, so both
    /// `sslmode=disable` and `sslmode=verify-full` work against it.
    pub fn start_with_tls() -> Result<Self> {
        Self::start_with_tls_for(&["localhost", "127.0.0.1"])
    }

    /// As [`start_with_tls`](Self::start_with_tls), with a server certificate valid for
    /// `names` only (DNS names or IP addresses): connecting by any other name is a mismatch.
    pub fn start_with_tls_for(names: &[&str]) -> Result<Self> {
        Self::start_inner(Some(names))
    }

    fn start_inner(tls_names: Option<&[&str]>) -> Result<Self> {
        let bin = find_pg_bin()?;
        let as_postgres_user = postgres_user_if_root()?;
        let dir = tempfile::Builder::new()
            .prefix("harness-pg-")
            .tempdir()
            .context("creating a temporary directory for PostgreSQL")?;
        let mut pg = Self {
            dir,
            bin,
            as_postgres_user,
            port: 0,
            password: random_token()?,
            ca_cert: None,
            running: false,
            extra_settings: Vec::new(),
        };
        pg.give_to_postgres_user(pg.dir.path())?;
        pg.initdb()?;
        if let Some(names) = tls_names {
            pg.write_tls_files(names)?;
        }
        // The port was free when we looked; retry if another process took it meanwhile.
        let mut last_error = None;
        for _ in 0..3 {
            pg.port = free_port()?;
            pg.write_settings()?;
            match pg.pg_ctl_start() {
                Ok(()) => return Ok(pg),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("PostgreSQL did not start")))
    }

    /// Always `127.0.0.1`.
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    /// The TCP port the server listens on (stays the same across [`restart`](Self::restart)).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the server's unix socket (`host=<this dir>` in libpq terms).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The password of the superuser `postgres`.
    pub fn superuser_password(&self) -> &str {
        &self.password
    }

    /// The throwaway CA certificate (PEM) that issued the server certificate, when started
    /// with [`start_with_tls`](Self::start_with_tls).
    pub fn ca_cert_path(&self) -> Option<&Path> {
        self.ca_cert.as_deref()
    }

    /// The server log (everything PostgreSQL wrote to stderr).
    pub fn log(&self) -> String {
        fs::read(self.log_path())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// A blocking client connected over TCP as the superuser to database `db`.
    ///
    /// This is the sync `postgres` crate: it must not run on a Tokio worker thread (it
    /// panics there). From async tests call it inside `tokio::task::spawn_blocking`.
    pub fn admin_client(&self, db: &str) -> Result<postgres::Client> {
        postgres::Config::new()
            .host(self.host())
            .port(self.port)
            .user("postgres")
            .password(&self.password)
            .dbname(db)
            .connect_timeout(Duration::from_secs(5))
            .connect(postgres::NoTls)
            .with_context(|| {
                format!(
                    "connecting to PostgreSQL at 127.0.0.1:{} as postgres, database {db}",
                    self.port
                )
            })
    }

    /// Runs `f` with a superuser client on a thread of its own (safe inside a Tokio runtime).
    pub fn with_admin_client<T: Send>(
        &self,
        db: &str,
        f: impl FnOnce(&mut postgres::Client) -> Result<T> + Send,
    ) -> Result<T> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let mut client = self.admin_client(db)?;
                    f(&mut client)
                })
                .join()
                .map_err(|_| anyhow!("the PostgreSQL admin thread panicked"))?
        })
    }

    /// Creates a fresh, uniquely named database owned by `postgres` and returns its name.
    pub fn create_database(&self) -> Result<String> {
        self.create_database_with_owner("postgres")
    }

    /// Creates a fresh, uniquely named database owned by `owner` (who may then create tables
    /// in its `public` schema) and returns its name.
    pub fn create_database_with_owner(&self, owner: &str) -> Result<String> {
        let name = format!(
            "test_{}_{}",
            std::process::id(),
            NEXT_DATABASE.fetch_add(1, Ordering::Relaxed)
        );
        self.create_named_database(&name, owner)?;
        Ok(name)
    }

    /// Creates the database `name` owned by `owner`.
    pub fn create_named_database(&self, name: &str, owner: &str) -> Result<()> {
        let sql = format!(
            "CREATE DATABASE {} OWNER {}",
            quote_ident(name),
            quote_ident(owner)
        );
        self.with_admin_client("postgres", |client| {
            client
                .batch_execute(&sql)
                .with_context(|| format!("creating database {name}"))
        })
    }

    /// Creates a login role `name` with `password`.
    pub fn create_role(&self, name: &str, password: &str) -> Result<()> {
        let sql = format!(
            "CREATE ROLE {} LOGIN PASSWORD {}",
            quote_ident(name),
            quote_literal(password)
        );
        self.with_admin_client("postgres", |client| {
            client
                .batch_execute(&sql)
                .with_context(|| format!("creating role {name}"))
        })
    }

    /// Changes the password of role `name` (what a Secrets Manager rotation does).
    pub fn set_password(&self, name: &str, password: &str) -> Result<()> {
        let sql = format!(
            "ALTER ROLE {} PASSWORD {}",
            quote_ident(name),
            quote_literal(password)
        );
        self.with_admin_client("postgres", |client| {
            client
                .batch_execute(&sql)
                .with_context(|| format!("changing the password of role {name}"))
        })
    }

    /// Stops the server (fast shutdown: open sessions are ended), keeping its data.
    pub fn stop(&mut self) -> Result<()> {
        self.pg_ctl_stop("fast")?;
        self.running = false;
        Ok(())
    }

    /// Stops the server as a crash would (immediate shutdown: sessions cut, no checkpoint),
    /// keeping its data; [`restart`](Self::restart) recovers it from the WAL.
    pub fn crash(&mut self) -> Result<()> {
        self.pg_ctl_stop("immediate")?;
        self.running = false;
        Ok(())
    }

    /// Starts the server again after [`stop`](Self::stop), on the same port with the same data.
    pub fn restart(&mut self) -> Result<()> {
        if self.running {
            self.pg_ctl_stop("fast")?;
            self.running = false;
        }
        self.pg_ctl_start()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// A command for one of the PostgreSQL tools, as the `postgres` user when we are root.
    fn tool(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        let mut command = if self.as_postgres_user.is_some() {
            let mut runuser = Command::new("runuser");
            runuser.args(["-u", "postgres", "--"]).arg(program);
            runuser
        } else {
            Command::new(program)
        };
        // The postgres user may not be allowed into the caller's working directory.
        command.current_dir(self.dir.path()).stdin(Stdio::null());
        // The server outlives pg_ctl in this process group: keep a terminal's Ctrl-C from it, so
        // whoever started it stops it in order (and can still read its data after a restart).
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        command
    }

    fn run_tool(&self, name: &str, args: &[&str]) -> Result<()> {
        let output = self
            .tool(name)
            .args(args)
            .output()
            .with_context(|| match self.as_postgres_user {
                Some(_) => format!(
                    "running `runuser -u postgres -- {}/{name}` (runuser comes with util-linux)",
                    self.bin.display()
                ),
                None => format!("running {}/{name}", self.bin.display()),
            })?;
        if !output.status.success() {
            bail!(
                "{name} {} failed ({}):\n{}{}\nserver log:\n{}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                tail(&self.log_path(), 30)
            );
        }
        Ok(())
    }

    fn give_to_postgres_user(&self, path: &Path) -> Result<()> {
        if let Some((uid, gid)) = self.as_postgres_user {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .with_context(|| format!("handing {} to the postgres user", path.display()))?;
        }
        Ok(())
    }

    fn initdb(&self) -> Result<()> {
        let pwfile = self.dir.path().join("pwfile");
        fs::write(&pwfile, &self.password).context("writing the initdb password file")?;
        self.give_to_postgres_user(&pwfile)?;
        let data = self.data_dir();
        let pwfile_arg = format!("--pwfile={}", pwfile.display());
        let data_arg = data.display().to_string();
        let result = self.run_tool(
            "initdb",
            &[
                "-D",
                &data_arg,
                "-U",
                "postgres",
                &pwfile_arg,
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
            ],
        );
        // The password file has done its job; do not leave it lying around.
        let _ = fs::remove_file(&pwfile);
        result
    }

    /// Writes the harness's settings into `postgresql.auto.conf` (read last, so it wins).
    fn write_settings(&self) -> Result<()> {
        let mut settings = String::new();
        let dir = self.dir.path().display();
        let _ = writeln!(settings, "listen_addresses = '127.0.0.1'");
        let _ = writeln!(settings, "port = {}", self.port);
        let _ = writeln!(settings, "unix_socket_directories = '{dir}'");
        // Load tests open 256 connections; leave headroom for admin sessions.
        let _ = writeln!(settings, "max_connections = 300");
        // A throwaway cluster need not survive the machine crashing (no fsync), but it must
        // survive its own crash (`crash`, `-m immediate`): a commit is acknowledged only once its
        // WAL is written, as Aurora acknowledges only what its storage quorum holds.
        let _ = writeln!(settings, "fsync = off");
        let _ = writeln!(settings, "full_page_writes = off");
        let _ = writeln!(settings, "log_min_messages = warning");
        if self.ca_cert.is_some() {
            let _ = writeln!(settings, "ssl = on");
            let _ = writeln!(settings, "ssl_cert_file = '{dir}/server.crt'");
            let _ = writeln!(settings, "ssl_key_file = '{dir}/server.key'");
        }
        for setting in &self.extra_settings {
            let _ = writeln!(settings, "{setting}");
        }
        let path = self.data_dir().join("postgresql.auto.conf");
        fs::write(&path, settings).context("writing postgresql.auto.conf")?;
        self.give_to_postgres_user(&path)
    }

    fn write_tls_files(&mut self, names: &[&str]) -> Result<()> {
        let tls = crate::tls::server_certificate(names)?;
        let dir = self.dir.path();
        let ca_path = dir.join("ca.crt");
        fs::write(&ca_path, tls.ca_cert_pem).context("writing ca.crt")?;
        fs::write(dir.join("server.crt"), tls.cert_pem).context("writing server.crt")?;
        let key_path = dir.join("server.key");
        fs::write(&key_path, tls.key_pem).context("writing server.key")?;
        // PostgreSQL refuses a key that others can read.
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600))?;
        }
        for name in ["ca.crt", "server.crt", "server.key"] {
            self.give_to_postgres_user(&dir.join(name))?;
        }
        self.ca_cert = Some(ca_path);
        Ok(())
    }

    fn pg_ctl_start(&mut self) -> Result<()> {
        let data = self.data_dir().display().to_string();
        let log = self.log_path().display().to_string();
        self.run_tool("pg_ctl", &["-D", &data, "-l", &log, "-w", "-t", "60", "start"])
            .with_context(|| format!("starting PostgreSQL on 127.0.0.1:{}", self.port))?;
        self.running = true;
        Ok(())
    }

    fn pg_ctl_stop(&self, mode: &str) -> Result<()> {
        let data = self.data_dir().display().to_string();
        self.run_tool("pg_ctl", &["-D", &data, "-m", mode, "-w", "-t", "60", "stop"])
            .context("stopping PostgreSQL")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running
            && let Err(error) = self.pg_ctl_stop("immediate")
        {
            eprintln!(
                "harness: could not stop PostgreSQL on port {}: {error:#}",
                self.port
            );
        }
    }
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .field("running", &self.running)
            .finish_non_exhaustive()
    }
}

/// The directory with `initdb`, `pg_ctl` and `postgres`: `$PG_BIN`, else `$PATH`, else the
/// newest `/usr/lib/postgresql/<version>/bin`.
fn find_pg_bin() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        let dir = PathBuf::from(dir);
        if has_pg_tools(&dir) {
            return Ok(dir);
        }
        bail!(
            "$PG_BIN={} does not hold initdb, pg_ctl and postgres. {INSTALL_HINT}",
            dir.display()
        );
    }
    // A link on PATH (as in /usr/local/bin) stands for its installation directory, which also
    // holds the tools not linked (pg_basebackup).
    if let Some(initdb) = find_in_path("initdb").map(|initdb| initdb.canonicalize().unwrap_or(initdb))
        && let Some(dir) = initdb.parent()
        && has_pg_tools(dir)
    {
        return Ok(dir.to_path_buf());
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| has_pg_tools(bin))
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| anyhow!("{INSTALL_HINT}"))
}

fn has_pg_tools(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|tool| is_executable(&dir.join(tool)))
}

/// As root: the uid and gid of the `postgres` user, which must exist. Otherwise `None`.
fn postgres_user_if_root() -> Result<Option<(u32, u32)>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name("postgres")
        .context("looking up the postgres user")?
        .ok_or_else(|| {
            anyhow!(
                "running as root, so PostgreSQL must run as the `postgres` user, which does not \
                 exist: `apt-get install -y postgresql` creates it (or run the tests as a non-root user)"
            )
        })?;
    if find_in_path("runuser").is_none() {
        bail!(
            "running as root needs `runuser` to start PostgreSQL as `postgres`: apt-get install -y util-linux"
        );
    }
    Ok(Some((user.uid.as_raw(), user.gid.as_raw())))
}

/// `"name"` with embedded quotes doubled: safe as an SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'value'` with embedded quotes doubled: safe as an SQL string literal
/// (`standard_conforming_strings` is on by default).
fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}
