//! Aurora in the twin: the program's cluster as a client in the VPC meets it, through its whole
//! lifecycle.
//!
//! | Aurora | the twin |
//! |---|---|
//! | a writer and a reader instance, one storage volume (an acknowledged commit survives a failover) | PostgreSQL 1 and 2 on the `aurora` node's loopback, the reader a *synchronous* hot standby |
//! | each instance's address in the DB subnet | the node's ENI carries both; at each an [`AuroraEndpoint`] forwards to its PostgreSQL |
//! | Serverless v2 at 0 ACU: pause when idle, resume (~15 s) on a connection | the endpoint's [`Lifecycle`] |
//! | the cluster endpoint: a CNAME (5 s TTL) to the writer's instance name | the VPC resolver's record (twin.rs), cached by Unbound as Route 53 Resolver caches |
//! | `aws rds failover-db-cluster` | the writer stops (every session ends), the reader is promoted, the CNAME moves, the old writer comes back as the new one's reader |
//! | `aws rds reboot-db-instance` | the writer restarts |
//! | an instance lost without a reset | nftables drops every packet to and from the writer's address |
//!
//! TLS only, as with `rds.force_ssl`: the certificate names the endpoints and the instances.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use harness::{AuroraEndpoint, Lifecycle};

use crate::ns::{self, in_namespace};
use crate::topology::Database;

/// The TTL of the cluster and reader endpoints' records (Aurora DNS zones use 5 s).
pub const ENDPOINT_TTL: u32 = 5;

/// The nftables table that makes an instance vanish (the `avt_` prefix: the twin's own).
const VANISH_TABLE: &str = "avt_vanish";

/// What the cluster is made of; the twin decides the addresses, names and credentials.
pub struct AuroraSpec<'a> {
    pub namespace: String,
    pub dir: PathBuf,
    pub database: &'a Database,
    /// The instances' addresses (the node's ENI carries both).
    pub addresses: [Ipv4Addr; 2],
    /// Certificate and key (PEM) for [`names`] and the endpoints.
    pub tls: (String, String),
    pub master_password: &'a str,
    pub lifecycle: Lifecycle,
}

pub struct Aurora {
    namespace: String,
    dir: PathBuf,
    bin: PathBuf,
    owner: (u32, u32),
    instances: Vec<Instance>,
    writer: usize,
    master_password: String,
    /// The address whose packets are dropped (an instance lost without a reset).
    vanished: Option<Ipv4Addr>,
}

struct Instance {
    name: String,
    address: Ipv4Addr,
    /// PostgreSQL's port on the node's loopback; the endpoint at `address` forwards there.
    local_port: u16,
    endpoint: AuroraEndpoint,
}

/// The instance names of a cluster endpoint, as RDS names them beside it:
/// `demo.cluster-abc.<region>.rds.amazonaws.com` → `demo-instance-N.abc.<region>.rds.amazonaws.com`;
/// and the reader endpoint `demo.cluster-ro-abc.…`.
pub fn names(endpoint: &str) -> ([String; 2], String) {
    let (cluster, rest) = endpoint.split_once('.').unwrap_or((endpoint, ""));
    let suffix = rest.strip_prefix("cluster-").unwrap_or(rest);
    (
        [1, 2].map(|number| format!("{cluster}-instance-{number}.{suffix}")),
        format!("{cluster}.cluster-ro-{suffix}"),
    )
}

impl Aurora {
    /// Starts the writer, then the reader from its base backup, then the endpoints.
    pub fn start(spec: AuroraSpec<'_>) -> Result<Self> {
        let bin = pg_bin()?;
        let user = nix::unistd::User::from_name("postgres")?.ok_or_else(|| {
            anyhow!("PostgreSQL must run as the `postgres` user: apt-get install -y postgresql")
        })?;
        let owner = (user.uid.as_raw(), user.gid.as_raw());
        std::fs::create_dir_all(&spec.dir)?;
        std::os::unix::fs::chown(&spec.dir, Some(owner.0), Some(owner.1))?;
        for (name, pem) in [("server.crt", &spec.tls.0), ("server.key", &spec.tls.1)] {
            let path = spec.dir.join(name);
            std::fs::write(&path, pem)?;
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            std::os::unix::fs::chown(&path, Some(owner.0), Some(owner.1))?;
        }
        let (instance_names, _) = names(&spec.database.endpoint);
        let mut aurora = Self {
            namespace: spec.namespace,
            dir: spec.dir,
            bin,
            owner,
            instances: Vec::new(),
            writer: 0,
            master_password: spec.master_password.to_owned(),
            vanished: None,
        };
        let local_ports = [5433, 5434];
        aurora.init_writer(local_ports[0])?;
        let database = spec.database.clone();
        let password = aurora.master_password.clone();
        aurora.admin_on(local_ports[0], "postgres", |client| {
            let user = &database.master_username;
            client.batch_execute(&format!("CREATE ROLE \"{user}\" LOGIN PASSWORD '{password}'"))?;
            client.batch_execute(&format!("CREATE DATABASE \"{}\" OWNER \"{user}\"", database.name))?;
            Ok(())
        })?;
        aurora.start_reader_of(local_ports[1], local_ports[0])?;
        for ((name, address), local_port) in instance_names.into_iter().zip(spec.addresses).zip(local_ports) {
            let listen = SocketAddr::from((address, spec.database.port));
            let upstream = SocketAddr::from((Ipv4Addr::LOCALHOST, local_port));
            let lifecycle = spec.lifecycle;
            let endpoint = in_namespace(&aurora.namespace, move || {
                AuroraEndpoint::start_on(listen, upstream, lifecycle)
            })??;
            aurora.instances.push(Instance {
                name,
                address,
                local_port,
                endpoint,
            });
        }
        Ok(aurora)
    }

    /// The writer's endpoint (pause state, connections, resumes).
    pub fn writer_endpoint(&self) -> &AuroraEndpoint {
        &self.instances[self.writer].endpoint
    }

    /// Changes the scaling settings of both instances.
    pub fn set_lifecycle(&self, lifecycle: Lifecycle) {
        for instance in &self.instances {
            instance.endpoint.set_lifecycle(lifecycle);
        }
    }

    /// A failover: the writer stops (every session ends), the reader is promoted, then
    /// `move_record` moves the cluster endpoint to `new writer name`, and the old writer comes
    /// back as the new one's synchronous reader (from a fresh base backup). A vanished writer
    /// stays off the network (AWS: "the client no longer gets TCP traffic from the database
    /// after failover initiates"; its connections end only by the client's timeouts) until
    /// [`restore`](Self::restore).
    pub fn failover(&mut self, move_record: impl FnOnce(&str) -> Result<()>) -> Result<()> {
        let (old, new) = (self.writer, 1 - self.writer);
        // A vanished writer streams nothing; what it holds alone was never acknowledged (its
        // commits wait for the reader, and a wait that ends without one needs a live session).
        if self.vanished.is_none() {
            self.wait_until_reader_replayed_writer()?;
        }
        self.pg_ctl(self.instances[old].local_port, &["-m", "fast", "stop"])?;
        self.pg_ctl(self.instances[new].local_port, &["promote"])?;
        self.writer = new;
        move_record(&self.instances[new].name)?;
        let data = self.data_dir(self.instances[old].local_port);
        std::fs::remove_dir_all(&data).with_context(|| format!("removing {}", data.display()))?;
        self.start_reader_of(self.instances[old].local_port, self.instances[new].local_port)
    }

    /// Aurora's instances share one volume: the reader has every commit the writer made
    /// visible. Streaming replication can lag behind that (a reader reconnecting after the
    /// writer restarted, a commit whose wait for the reader was cancelled), so a failover first
    /// waits for the reader to replay everything the writer wrote.
    fn wait_until_reader_replayed_writer(&self) -> Result<()> {
        let (writer, reader) = (
            self.instances[self.writer].local_port,
            self.instances[1 - self.writer].local_port,
        );
        let written: String = self.admin_on(writer, "postgres", |client| {
            Ok(client.query_one("SELECT pg_current_wal_lsn()::text", &[])?.get(0))
        })?;
        ns::wait_for(
            "the reader replaying the writer's WAL",
            Duration::from_secs(15),
            || {
                let replayed = self.admin_on(reader, "postgres", |client| {
                    let row = client
                        .query_one("SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", &[&written])?;
                    Ok(row.get::<_, Option<bool>>(0))
                })?;
                Ok(replayed.filter(|caught_up| *caught_up))
            },
        )?;
        Ok(())
    }

    /// A reboot of the writer: every session ends, connections fail while it starts.
    pub fn reboot(&mut self) -> Result<()> {
        let port = self.instances[self.writer].local_port;
        self.pg_ctl(port, &["-m", "fast", "restart"])
    }

    /// The writer drops off the network: every packet to or from its address is dropped, so
    /// open connections see silence, not a reset, and new ones no answer.
    pub fn vanish(&mut self) -> Result<()> {
        anyhow::ensure!(
            self.vanished.is_none(),
            "an instance has vanished already: restore it first"
        );
        let address = self.instances[self.writer].address;
        ns::nft(
            &self.namespace,
            &format!(
                "table inet {VANISH_TABLE}\ndelete table inet {VANISH_TABLE}\ntable inet {VANISH_TABLE} {{\n\
                 \x20 chain inbound {{ type filter hook prerouting priority raw; ip daddr {address} drop; }}\n\
                 \x20 chain outbound {{ type filter hook output priority raw; ip saddr {address} drop; }}\n}}\n"
            ),
        )?;
        self.vanished = Some(address);
        Ok(())
    }

    /// Ends [`vanish`](Self::vanish): the instance is on the network again.
    pub fn restore(&mut self) -> Result<()> {
        anyhow::ensure!(self.vanished.is_some(), "no instance has vanished");
        ns::run(
            "ip",
            &[
                "netns",
                "exec",
                &self.namespace,
                "nft",
                "delete",
                "table",
                "inet",
                VANISH_TABLE,
            ],
        )?;
        self.vanished = None;
        Ok(())
    }

    /// One line a person reads: who writes, who reads, paused or not, connections.
    pub fn status(&self) -> String {
        let describe = |index: usize| {
            let instance = &self.instances[index];
            format!(
                "{} {} ({}): {}, {} connection(s), resumed {} time(s)",
                if index == self.writer { "writer" } else { "reader" },
                instance.name,
                instance.address,
                if instance.endpoint.is_paused() {
                    "paused"
                } else {
                    "awake"
                },
                instance.endpoint.connections(),
                instance.endpoint.resumes()
            )
        };
        let mut text = format!("{}\n{}", describe(self.writer), describe(1 - self.writer));
        if let Some(address) = self.vanished {
            text.push_str(&format!(
                "\n{address} has vanished (its packets are dropped) until `restore`"
            ));
        }
        text
    }

    /// Runs `f` with a superuser client on the writer, database `db` (over its unix socket,
    /// outside any network).
    pub fn admin<T: Send>(
        &self,
        db: &str,
        f: impl FnOnce(&mut postgres::Client) -> Result<T> + Send,
    ) -> Result<T> {
        self.admin_on(self.instances[self.writer].local_port, db, f)
    }

    /// Stops both instances (immediately: PostgreSQL removes its shared memory itself, which a
    /// SIGKILL from the namespace's removal would leave behind) and the endpoints.
    pub fn stop(&mut self) {
        self.instances.clear();
        stop_all(&self.dir);
    }

    fn admin_on<T: Send>(
        &self,
        local_port: u16,
        db: &str,
        f: impl FnOnce(&mut postgres::Client) -> Result<T> + Send,
    ) -> Result<T> {
        let dir = self.dir.clone();
        std::thread::scope(|scope| {
            scope
                .spawn(move || -> Result<T> {
                    let connect = |dbname: &str| {
                        postgres::Config::new()
                            .host_path(&dir)
                            .port(local_port)
                            .user("postgres")
                            .dbname(dbname)
                            .connect(postgres::NoTls)
                    };
                    let mut client = connect(db)
                        .or_else(|_| connect("postgres"))
                        .context("connecting to Aurora as postgres")?;
                    f(&mut client)
                })
                .join()
                .map_err(|_| anyhow!("the Aurora admin thread panicked"))?
        })
    }

    fn data_dir(&self, local_port: u16) -> PathBuf {
        self.dir.join(format!("data-{local_port}"))
    }

    /// A PostgreSQL tool as `postgres` inside the node's namespace.
    fn tool(&self, tool: &str, args: &[&str]) -> Result<String> {
        let program = self.bin.join(tool).display().to_string();
        let mut full = vec![
            "netns",
            "exec",
            &self.namespace,
            "runuser",
            "-u",
            "postgres",
            "--",
            &program,
        ];
        full.extend_from_slice(args);
        ns::run("ip", &full)
    }

    fn pg_ctl(&self, local_port: u16, args: &[&str]) -> Result<()> {
        let data = self.data_dir(local_port).display().to_string();
        let log = self
            .dir
            .join(format!("postgres-{local_port}.log"))
            .display()
            .to_string();
        let mut full = vec!["-D", &data, "-l", &log, "-w", "-t", "60"];
        full.extend_from_slice(args);
        self.tool("pg_ctl", &full).map(drop)
    }

    fn init_writer(&self, local_port: u16) -> Result<()> {
        let data = self.data_dir(local_port).display().to_string();
        self.tool(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
            ],
        )?;
        // TCP clients must use TLS (rds.force_ssl = 1); the reader streams over loopback.
        self.write_owned(
            &self.data_dir(local_port).join("pg_hba.conf"),
            "local all all trust\nhost replication postgres 127.0.0.1/32 trust\nhostssl all all 0.0.0.0/0 scram-sha-256\n",
        )?;
        self.write_settings(local_port, None)?;
        self.pg_ctl(local_port, &["start"])
    }

    /// A synchronous hot standby of the instance on `primary_port`, from a base backup.
    fn start_reader_of(&self, local_port: u16, primary_port: u16) -> Result<()> {
        let data = self.data_dir(local_port);
        let primary = format!("host=127.0.0.1 port={primary_port} user=postgres application_name=reader");
        self.tool(
            "pg_basebackup",
            &[
                "-D",
                &data.display().to_string(),
                "-d",
                &primary,
                "-X",
                "stream",
                "--checkpoint=fast",
                "--no-sync",
            ],
        )?;
        self.write_owned(&data.join("standby.signal"), "")?;
        self.write_settings(local_port, Some(&primary))?;
        self.pg_ctl(local_port, &["start"])?;
        self.admin_on(primary_port, "postgres", |client| {
            // One statement each: ALTER SYSTEM refuses the implicit transaction of a batch.
            client.batch_execute("ALTER SYSTEM SET synchronous_standby_names = 'reader'")?;
            client.batch_execute("ALTER SYSTEM SET synchronous_commit = 'on'")?;
            client.batch_execute("SELECT pg_reload_conf()")?;
            Ok(())
        })
    }

    fn write_settings(&self, local_port: u16, primary_conninfo: Option<&str>) -> Result<()> {
        let dir = self.dir.display();
        let mut settings = format!(
            "listen_addresses = '127.0.0.1'\nport = {local_port}\nunix_socket_directories = '{dir}'\n\
             max_connections = 300\nfsync = off\nfull_page_writes = off\nlog_min_messages = warning\n\
             ssl = on\nssl_cert_file = '{dir}/server.crt'\nssl_key_file = '{dir}/server.key'\n"
        );
        if let Some(conninfo) = primary_conninfo {
            settings.push_str(&format!("primary_conninfo = '{conninfo}'\n"));
        }
        self.write_owned(&self.data_dir(local_port).join("postgresql.auto.conf"), &settings)
    }

    fn write_owned(&self, path: &Path, text: &str) -> Result<()> {
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        std::os::unix::fs::chown(path, Some(self.owner.0), Some(self.owner.1))?;
        Ok(())
    }
}

impl Drop for Aurora {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `pg_ctl stop -m immediate` on every instance under `dir` (an Aurora directory of this or a
/// killed twin); instances not running are skipped. Best effort: the namespace's removal kills
/// whatever is left.
pub fn stop_all(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let Ok(bin) = pg_bin() else { return };
    for data in entries.flatten().map(|entry| entry.path()) {
        if !data.join("postmaster.pid").exists() {
            continue;
        }
        let pg_ctl = bin.join("pg_ctl").display().to_string();
        let data = data.display().to_string();
        let stopped = ns::run(
            "runuser",
            &[
                "-u",
                "postgres",
                "--",
                &pg_ctl,
                "-D",
                &data,
                "stop",
                "-m",
                "immediate",
                "-w",
                "-t",
                "10",
            ],
        );
        if let Err(error) = stopped {
            eprintln!("vpc-twin: stopping Aurora ({data}): {error:#}");
        }
    }
}

/// How long a connection to the twin's Aurora may wait for a resume, by default (Aurora: "about 15 s").
pub const RESUME_TAKES: Duration = Duration::from_secs(15);

pub fn pg_bin() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("PG_BIN") {
        return Ok(PathBuf::from(path));
    }
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|entry| {
                    let version = entry.file_name().to_string_lossy().parse().ok()?;
                    let bin = entry.path().join("bin");
                    bin.join("initdb").exists().then_some((version, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    candidates.sort();
    candidates.pop().map(|(_, bin)| bin).ok_or_else(|| {
        anyhow!("PostgreSQL server binaries were not found: apt-get install -y postgresql (or set PG_BIN)")
    })
}
