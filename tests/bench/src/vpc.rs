//! The "VPC" profile: the loads of the suite across a network that behaves like the one between
//! the frontend and Aurora (and the private service) in a VPC, where every round trip costs about
//! a millisecond and every durable commit waits for Aurora's storage quorum.
//!
//! The model, fixed so that figures compare between runs and machines:
//! - **0.5 ms one way** between the frontend and PostgreSQL, and between the frontend and the
//!   private service: a [`Link`] on each path. pgbench and the seed reach PostgreSQL through the
//!   same link, so all three see the same network.
//! - **Every durable commit 2 ms slower**: PostgreSQL's `commit_delay = 2000` µs with
//!   `commit_siblings = 0`. The backend that flushes the WAL for a commit sleeps that long while
//!   holding the WAL write lock, then flushes everything written meanwhile, so commits that arrive
//!   during the wait share the flush — as Aurora's quorum write takes a few milliseconds and
//!   merges the commits waiting for it. (`MinimumActiveBackends(0)` is always true, so the delay
//!   applies to every flush, not only under concurrency; it needs `fsync = on`, which the suite's
//!   durable setting has.) Delaying the answer that ends a writing transaction instead would make
//!   concurrent commits wait one after another, which Aurora does not.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use harness::{Postgres, ServiceCommand};

use crate::link::{Link, OwnLatency};
use crate::load::{Pgbench, Run, SELECT_SCRIPT, Wrk, insert_script};
use crate::seed::{Seed, SeedDatabase};
use crate::system::peak_rss_kib;
use crate::{ms, prefill, private_service_table, rate, say, wait_for_schema, write_counters};

/// One way, frontend ↔ PostgreSQL and frontend ↔ private service.
pub const ONE_WAY: Duration = Duration::from_micros(500);
/// Added to every durable commit (Aurora's quorum write).
pub const COMMIT_DELAY: Duration = Duration::from_millis(2);

/// What the profile needs from the run that hosts it.
pub struct Inputs<'a> {
    pub pg: &'a Postgres,
    pub wrk: &'a Wrk,
    pub work_dir: &'a Path,
    pub frontend_bin: &'a Path,
    /// The frontend's environment on loopback; the profile points it at the links.
    pub frontend_env: &'a [(OsString, OsString)],
    pub private_service: SocketAddr,
    pub database: &'a str,
    pub role: &'a str,
    pub password: &'a str,
    pub rows: u64,
    pub connections: &'a [u32],
    pub seconds: u32,
    /// The frontend's pool size: pgbench's single-row INSERT runs on as many connections.
    pub pool_size: u32,
}

pub struct VisitRow {
    pub connections: u32,
    pub http: Run,
    pub batch: f64,
    /// pgbench's single-row INSERT on `pool_size` clients.
    pub single_on_pool: Run,
    pub seed: Run,
}

pub struct RecentRow {
    pub connections: u32,
    pub http: Run,
    pub sql: Run,
    pub seed: Run,
}

pub struct Profile {
    pub rows: u64,
    pub pool_size: u32,
    pub link_overhead: String,
    pub visits: Vec<VisitRow>,
    pub recents: Vec<RecentRow>,
    /// (connections, through the frontend, straight through the link)
    pub private: Vec<(u32, Run, Run)>,
    /// The frontend's peak RSS before the private-service fan-out, and at the end.
    pub rss_before_fan_out_kib: u64,
    pub rss_end_kib: u64,
}

pub fn run(inputs: &Inputs) -> Result<Profile> {
    say("VPC profile: measuring the link's own latency");
    let link_overhead = OwnLatency::measure(2000)?.summary();
    set_commit_delay(inputs.pg, Some(COMMIT_DELAY))?;
    let profile = run_loads(inputs, link_overhead);
    let reset = set_commit_delay(inputs.pg, None);
    let profile = profile?;
    reset?;
    Ok(profile)
}

fn run_loads(inputs: &Inputs, link_overhead: String) -> Result<Profile> {
    let database_link = Link::start(
        SocketAddr::from((Ipv4Addr::LOCALHOST, inputs.pg.port())),
        ONE_WAY,
        Duration::ZERO,
    )?;
    let private_link = Link::start(inputs.private_service, ONE_WAY, Duration::ZERO)?;
    let database_port = database_link.addr().port();

    say("VPC profile: starting the frontend, pgbench and the seed behind the links");
    let env = inputs
        .frontend_env
        .iter()
        .filter(|(name, _)| name != "DB_HOST" && name != "DB_PORT")
        .cloned()
        .chain([
            ("DB_HOST".into(), "127.0.0.1".into()),
            ("DB_PORT".into(), database_port.to_string().into()),
        ]);
    let frontend = ServiceCommand::new(inputs.frontend_bin)
        .envs(env)
        .env("ECSPRIVATESERVICE", format!("http://{}", private_link.addr()))
        .spawn()?;
    wait_for_schema(&frontend)?;
    let pgbench = Pgbench::new(
        inputs.work_dir,
        database_port,
        inputs.role,
        inputs.password,
        inputs.database,
    )?;
    let seed = Seed::start(&SeedDatabase {
        host: "127.0.0.1",
        port: database_port,
        name: inputs.database,
        user: inputs.role,
        password: inputs.password,
    })?;
    let mut admin = inputs.pg.admin_client(inputs.database)?;
    prefill(&mut admin, inputs.rows)?;

    let mut visits = Vec::new();
    let mut recents = Vec::new();
    for &connections in inputs.connections {
        say(&format!(
            "VPC profile, {connections} connections: GET /recent-visits vs pgbench SELECT vs the seed"
        ));
        let url = frontend.url("/recent-visits");
        recents.push(RecentRow {
            connections,
            http: inputs.wrk.run(&url, connections, inputs.seconds)?,
            sql: pgbench.run("vpc-select", SELECT_SCRIPT, connections, inputs.seconds)?,
            seed: inputs
                .wrk
                .run(&seed.url("/recent-visits"), connections, inputs.seconds)?,
        });
        say(&format!(
            "VPC profile, {connections} connections: GET / vs pgbench INSERT vs the seed"
        ));
        let (xid_before, rows_before) = write_counters(&mut admin)?;
        let http = inputs.wrk.run(&frontend.url("/"), connections, inputs.seconds)?;
        let (xid_after, rows_after) = write_counters(&mut admin)?;
        let transactions = xid_after.saturating_sub(xid_before).max(1);
        visits.push(VisitRow {
            connections,
            http,
            batch: rows_after.saturating_sub(rows_before) as f64 / transactions as f64,
            single_on_pool: pgbench.run(
                "vpc-insert-1",
                &insert_script(1),
                inputs.pool_size,
                inputs.seconds,
            )?,
            seed: inputs.wrk.run(&seed.url("/"), connections, inputs.seconds)?,
        });
    }
    let rss_before_fan_out_kib = peak_rss_kib(frontend.pid())?;

    let mut private = Vec::new();
    for &connections in inputs.connections {
        say(&format!(
            "VPC profile, {connections} connections: GET /ecs-private-service vs the private service through the link"
        ));
        let through = inputs
            .wrk
            .run(&frontend.url("/ecs-private-service"), connections, inputs.seconds)?;
        let direct = inputs.wrk.run(
            &format!("http://{}/", private_link.addr()),
            connections,
            inputs.seconds,
        )?;
        private.push((connections, through, direct));
    }
    let rss_end_kib = peak_rss_kib(frontend.pid())?;
    Ok(Profile {
        rows: inputs.rows,
        pool_size: inputs.pool_size,
        link_overhead,
        visits,
        recents,
        private,
        rss_before_fan_out_kib,
        rss_end_kib,
    })
}

/// Sets (or, with `None`, removes) the commit delay of the VPC model, effective at once.
fn set_commit_delay(pg: &Postgres, delay: Option<Duration>) -> Result<()> {
    // One statement per call: ALTER SYSTEM refuses to run in the implicit transaction of several.
    let statements = match delay {
        Some(delay) => [
            format!("ALTER SYSTEM SET commit_delay = {}", delay.as_micros()),
            "ALTER SYSTEM SET commit_siblings = 0".to_owned(),
        ],
        None => [
            "ALTER SYSTEM RESET commit_delay".to_owned(),
            "ALTER SYSTEM RESET commit_siblings".to_owned(),
        ],
    };
    pg.with_admin_client("postgres", |client| {
        for statement in statements
            .iter()
            .map(String::as_str)
            .chain(["SELECT pg_reload_conf()"])
        {
            client.batch_execute(statement)?;
        }
        Ok(())
    })
    .context("setting PostgreSQL's commit_delay")
}

/// The round trip plus the commit delay: the least a visit can take.
fn floor_us() -> f64 {
    (2 * ONE_WAY + COMMIT_DELAY).as_secs_f64() * 1e6
}

impl Profile {
    /// The profile's tables and its targets. `loopback_at_64`: the same run's loopback `GET /`
    /// req/s at 64 connections; `verdict` judges a target (or declines to, in a smoke run).
    pub fn markdown(&self, loopback_at_64: Option<f64>, verdict: impl Fn(bool) -> &'static str) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "\n## VPC profile: the same loads across a VPC-like network\n\n\
             Between the frontend and PostgreSQL, and between the frontend and the private service, a latency link \
             adds {} ms one way ({} ms round trip); pgbench and the seed reach PostgreSQL through the same link. \
             Every durable commit is {} ms slower (`commit_delay`, see tests/bench/src/vpc.rs for the model). \
             The table holds {} rows. The link {}.\n",
            ONE_WAY.as_secs_f64() * 1e3,
            2.0 * ONE_WAY.as_secs_f64() * 1e3,
            COMMIT_DELAY.as_secs_f64() * 1e3,
            self.rows,
            self.link_overhead,
        );
        let _ = writeln!(
            md,
            "### `GET /` vs pgbench INSERT vs the seed\n\n\
             pgbench runs the frontend's statement with one row on {} connections (the frontend's pool size). \
             The seed is the original frontend (FastAPI + psycopg, a new connection per request; tests/bench/seed).\n\n\
             | conns | GET / req/s | p50 ms | p99 ms | errors | batch | pgbench 1-row on {} conns tx/s | p50 ms | **× pgbench** | seed req/s | p50 ms | errors | **× seed** |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            self.pool_size, self.pool_size
        );
        for row in &self.visits {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {:.1} | {} | {} | **{:.1}** | {} | {} | {} | **{:.0}** |",
                row.connections,
                rate(row.http.per_second),
                ms(row.http.p50_us),
                ms(row.http.p99_us),
                row.http.errors,
                row.batch,
                rate(row.single_on_pool.per_second),
                ms(row.single_on_pool.p50_us),
                row.http.per_second / row.single_on_pool.per_second.max(1e-9),
                rate(row.seed.per_second),
                ms(row.seed.p50_us),
                row.seed.errors,
                row.http.per_second / row.seed.per_second.max(1e-9),
            );
        }
        let _ = writeln!(
            md,
            "\n### `GET /recent-visits` vs pgbench SELECT vs the seed\n\n\
             | conns | req/s | p50 ms | p99 ms | errors | pgbench tx/s | p50 ms | **× pgbench** | seed req/s | errors |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for row in &self.recents {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | **{:.2}** | {} | {} |",
                row.connections,
                rate(row.http.per_second),
                ms(row.http.p50_us),
                ms(row.http.p99_us),
                row.http.errors,
                rate(row.sql.per_second),
                ms(row.sql.p50_us),
                row.http.per_second / row.sql.per_second.max(1e-9),
                rate(row.seed.per_second),
                row.seed.errors,
            );
        }
        let _ = writeln!(
            md,
            "\n### `GET /ecs-private-service` vs the private service through the link\n"
        );
        md.push_str(&private_service_table(&self.private));
        let _ = writeln!(
            md,
            "\nFrontend peak RSS (VmHWM): {:.1} MiB after the `GET /` and `/recent-visits` loads, {:.1} MiB after the \
             private-service fan-out.",
            self.rss_before_fan_out_kib as f64 / 1024.0,
            self.rss_end_kib as f64 / 1024.0
        );
        md.push_str(&self.targets(loopback_at_64, verdict));
        md
    }

    fn targets(&self, loopback_at_64: Option<f64>, verdict: impl Fn(bool) -> &'static str) -> String {
        let mut md = String::from(
            "\n### VPC profile targets, checked against this run\n\n| target | measured | verdict |\n|---|---|---|\n",
        );
        let floor = floor_us();
        if let Some(row) = self.visits.iter().find(|row| row.connections == 64) {
            let per_second = row.http.per_second;
            let versus_pgbench = per_second / row.single_on_pool.per_second.max(1e-9);
            let _ = writeln!(
                md,
                "| GET / at 64 ≥ 10× pgbench 1-row INSERT on the pool's {} connections | {versus_pgbench:.1}× | {} |",
                self.pool_size,
                verdict(versus_pgbench >= 10.0)
            );
            let little = 64.0 / (floor / 1e6);
            let bound = loopback_at_64.map_or(little, |loopback| little.min(loopback));
            let _ = writeln!(
                md,
                "| GET / at 64 ≥ 0.8× min(Little's bound 64 ÷ {} ms = {}, loopback {}) | {} req/s = {:.2}× | {} |",
                ms(floor),
                rate(little),
                loopback_at_64.map_or_else(|| "not measured".to_owned(), rate),
                rate(per_second),
                per_second / bound,
                verdict(per_second >= 0.8 * bound)
            );
            let versus_seed = per_second / row.seed.per_second.max(1e-9);
            let _ = writeln!(
                md,
                "| GET / at 64 ≥ 100× the seed | {versus_seed:.0}× | {} |",
                verdict(versus_seed >= 100.0)
            );
            let _ = writeln!(
                md,
                "| GET / at 64: p50 ≤ round trip + commit delay + 1 ms = {} ms | {} ms | {} |",
                ms(floor + 1000.0),
                ms(row.http.p50_us),
                verdict(row.http.p50_us <= floor + 1000.0)
            );
            let _ = writeln!(
                md,
                "| GET / at 64: p99 ≤ 2 × (round trip + commit delay) + 2 ms = {} ms | {} ms | {} |",
                ms(2.0 * floor + 2000.0),
                ms(row.http.p99_us),
                verdict(row.http.p99_us <= 2.0 * floor + 2000.0)
            );
        }
        let ratios: Vec<String> = self
            .recents
            .iter()
            .map(|row| {
                format!(
                    "{:.2}× (c={})",
                    row.http.per_second / row.sql.per_second.max(1e-9),
                    row.connections
                )
            })
            .collect();
        let _ = writeln!(
            md,
            "| /recent-visits ≥ 1× pgbench SELECT | {} | {} |",
            ratios.join(", "),
            verdict(
                self.recents
                    .iter()
                    .all(|row| row.http.per_second >= row.sql.per_second)
            )
        );
        let rss_mib = self.rss_before_fan_out_kib as f64 / 1024.0;
        let _ = writeln!(
            md,
            "| peak RSS ≤ 32 MiB (all loads but the private-service fan-out) | {rss_mib:.1} MiB | {} |",
            verdict(rss_mib <= 32.0)
        );
        md
    }
}
