//! An Aurora cluster on loopback for the lifecycle suites: a writer and, when asked for, a
//! synchronous reader (two PostgreSQL clusters streaming), the cluster endpoint in front of them
//! ([`AuroraEndpoint`]: moved by a failover, paused and resumed), and the frontend reaching the
//! database only through that endpoint.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use harness::{AuroraEndpoint, Lifecycle, Postgres, Service, ServiceCommand};

use crate::stack::{addr_of, frontend_command, user_agents};

/// The User-Agent prefix of visits another instance of the frontend stored (e.g.
/// [`Cluster::assert_reads_see_a_visit_stored_elsewhere`]'s): not the load's, so not accounted.
pub const STORED_ELSEWHERE: &str = "stored by another instance";

pub struct Cluster {
    /// The instances; `writer` indexes the one that accepts writes.
    instances: Vec<Postgres>,
    writer: usize,
    pub endpoint: AuroraEndpoint,
    pub db: String,
    pub frontend: Service,
    /// How the frontend was started, to start it again on the same port.
    frontend_command: ServiceCommand,
    /// The logs of frontends replaced by [`replace_frontend`](Self::replace_frontend).
    earlier_logs: String,
}

impl Cluster {
    /// A writer (and a reader if `with_reader`), the endpoint with `lifecycle`, and the frontend
    /// with `extra` environment. Returns once the frontend is healthy.
    pub fn start(lifecycle: Lifecycle, with_reader: bool, extra: &[(&str, &str)]) -> Result<Self> {
        let writer = Postgres::start()?;
        let db = writer.create_database()?;
        let mut instances = vec![writer];
        if with_reader {
            instances.push(instances[0].start_standby()?);
        }
        let endpoint = AuroraEndpoint::start(address(&instances[0]), lifecycle)?;
        // The frontend knows the endpoint, never an instance.
        let command = frontend_command(&instances[0], &db, "postgres", instances[0].superuser_password())?
            .env("DB_PORT", endpoint.port().to_string())
            .envs(extra.iter().copied());
        let frontend = command.spawn()?;
        Ok(Self {
            instances,
            writer: 0,
            endpoint,
            db,
            frontend_command: command.port(frontend.port()),
            frontend,
            earlier_logs: String::new(),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        addr_of(&self.frontend)
    }

    /// The instance that accepts writes now: where every acknowledged visit must be.
    pub fn writer(&self) -> &Postgres {
        &self.instances[self.writer]
    }

    /// Every stored User-Agent, read on the writer, less the visits of
    /// [`assert_reads_see_a_visit_stored_elsewhere`](Self::assert_reads_see_a_visit_stored_elsewhere)
    /// (no load sent them).
    pub fn user_agents(&self) -> Result<Vec<Option<String>>> {
        let mut agents = user_agents(self.writer(), &self.db)?;
        agents.retain(|agent| {
            !agent
                .as_deref()
                .is_some_and(|agent| agent.starts_with(STORED_ELSEWHERE))
        });
        Ok(agents)
    }

    /// As `aws rds failover-db-cluster`: the writer restarts (every session ends) and comes back
    /// as a reader, the reader is promoted, and the endpoint's record moves to it. Clients that
    /// resolved the record before it moved keep reaching the old writer for `stale` (Aurora's
    /// TTL is 5 s). Returns when the record moved; blocks until the stale window is over.
    pub fn failover(&mut self, stale: Duration) -> Result<Instant> {
        let old = self.writer;
        let new = 1 - old;
        anyhow::ensure!(self.instances.len() == 2, "a failover needs a reader");
        let started = Instant::now();
        // Shared storage: the reader has whatever the writer committed.
        self.instances[old].wait_until_replayed_on(&self.instances[new], Duration::from_secs(15))?;
        self.instances[old].stop().context("stopping the writer")?;
        let stopped = started.elapsed();
        self.instances[new].promote()?;
        let moved = Instant::now();
        println!(
            "failover: writer stopped in {stopped:?}, reader promoted {:?} later",
            moved.duration_since(started) - stopped
        );
        self.writer = new;
        self.instances[old]
            .restart_as_reader()
            .context("restarting the old writer as a reader")?;
        std::thread::sleep(stale.saturating_sub(moved.elapsed()));
        self.endpoint.point_at(address(&self.instances[new]));
        Ok(moved)
    }

    /// The writer turns reader without ending its sessions, the reader is promoted and the
    /// endpoint moves to it at once: sessions opened before stay on the old writer, where every
    /// write now fails with SQLSTATE 25006. Returns when the endpoint moved.
    pub fn demote_in_place(&mut self) -> Result<Instant> {
        let (old, new) = (self.writer, 1 - self.writer);
        anyhow::ensure!(self.instances.len() == 2, "a promotion needs a reader");
        self.instances[old].turn_read_only_in_place()?;
        self.instances[new].promote()?;
        self.writer = new;
        self.endpoint.point_at(address(&self.instances[new]));
        Ok(Instant::now())
    }

    /// A reboot of the writer (a minor-version upgrade, `aws rds reboot-db-instance`): every
    /// session ends, connections are refused while it starts. Returns when it accepts again.
    pub fn reboot(&mut self, down_for: Duration) -> Result<Instant> {
        self.writer_down_and_up(Postgres::stop, down_for)
    }

    /// The writer crashes (`-m immediate`: sessions cut mid-statement, no checkpoint), stays down
    /// for `down_for`, and recovers from its WAL. Returns when it accepts again.
    pub fn crash(&mut self, down_for: Duration) -> Result<Instant> {
        self.writer_down_and_up(Postgres::crash, down_for)
    }

    fn writer_down_and_up(
        &mut self,
        stop: fn(&mut Postgres) -> Result<()>,
        down_for: Duration,
    ) -> Result<Instant> {
        let writer = &mut self.instances[self.writer];
        stop(writer).context("stopping the writer")?;
        std::thread::sleep(down_for);
        writer.restart().context("starting the writer again")?;
        Ok(Instant::now())
    }

    /// Whether a reader is left to fail over to ([`failover`](Self::failover) leaves the old
    /// writer read-only, not streaming: it cannot be promoted again).
    pub fn can_fail_over(&self) -> bool {
        self.instances.len() == 2 && self.writer == 0
    }

    /// SIGTERM to the frontend (a deployment replacing it), then the same frontend again on the
    /// same port once it has exited. Returns how long it took to exit.
    pub fn replace_frontend(&mut self) -> Result<Duration> {
        let signalled = Instant::now();
        self.frontend.sigterm()?;
        let status = self.frontend.wait_exit(Duration::from_secs(40))?;
        let exited = signalled.elapsed();
        anyhow::ensure!(
            status.success(),
            "the frontend exited with {status}:\n{}",
            self.frontend.logs()
        );
        let old_logs = self.frontend.logs();
        self.frontend = self.frontend_command.spawn()?;
        self.earlier_logs.push_str(&old_logs);
        Ok(exited)
    }

    /// Everything the frontends (this one and those it replaced) have logged.
    pub fn frontend_logs(&self) -> String {
        format!("{}{}", self.earlier_logs, self.frontend.logs())
    }

    /// A visit stored by another instance of the frontend (straight on the writer), then
    /// `/recent-visits` through this one: what it reads must be at least as new (reads are never
    /// staler than a committed visit, so no reader session may be left on an old writer).
    pub fn assert_reads_see_a_visit_stored_elsewhere(&self, when: &str) -> Result<()> {
        let agent = format!("{STORED_ELSEWHERE} {when}");
        let stored: chrono::DateTime<chrono::Utc> = self.writer().with_admin_client(&self.db, |client| {
            Ok(client
                .query_one(
                    "INSERT INTO access (last_update, user_agent) VALUES (now(), $1) RETURNING last_update",
                    &[&agent],
                )?
                .get(0))
        })?;
        let read = crate::raw::get(self.addr(), "/recent-visits", &agent, Duration::from_secs(10))?;
        let body: serde_json::Value = serde_json::from_slice(&read.body).context("recent visits are JSON")?;
        let newest = body["Response"][0]["timestamp"]
            .as_str()
            .and_then(|text| chrono::DateTime::parse_from_rfc3339(text).ok())
            .with_context(|| format!("no visit read: {body}"))?;
        anyhow::ensure!(
            newest >= stored,
            "/recent-visits is older than the visit committed before it ({agent:?}, stored at {stored}): {body}"
        );
        Ok(())
    }

    /// Waits until the instance has paused (the frontend closed its idle connections, and the
    /// pause delay passed); returns how long that took, or fails after `within`.
    pub fn await_pause(&self, within: Duration) -> Result<Duration> {
        let started = Instant::now();
        while !self.endpoint.is_paused() {
            anyhow::ensure!(
                started.elapsed() < within,
                "the instance did not pause within {within:?}: the frontend holds {} connection(s)",
                self.endpoint.connections()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(started.elapsed())
    }
}

fn address(instance: &Postgres) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], instance.port()))
}
