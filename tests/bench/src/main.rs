//! `bench`: the frontend under HTTP load, side by side with PostgreSQL's own limit for the
//! same statements, in one run on this machine. Writes a markdown report (tests/bench/RESULTS.md).
//!
//! For each table size N: `GET /recent-visits` with wrk against `pgbench` running the same
//! SELECT with the same number of connections; `GET /` (group commit) against `pgbench`'s
//! single-row INSERT at the same concurrency, and against `pgbench` inserting batches of the
//! size the frontend actually committed, on as many connections as the frontend has writers.
//! Then `/ecs-private-service` against calling the private service directly, start-to-ready
//! times and the frontend's peak RSS. Finally the "VPC" profile ([`vpc`]): the same loads across
//! a VPC-like link (0.5 ms one way, commits 2 ms slower), against pgbench and the seed.

// Only their tests use `link` and `seed` until the run does. `expect`, not `allow`: once the run
// uses them, the compiler reports these two lines as unfulfilled, and they go.
mod builds;
mod link;
mod load;
mod seed;
mod system;
mod vpc;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{ArgAction, Parser};
use harness::{EcsMetadata, Postgres, Service, ServiceCommand};

use crate::load::{Pgbench, Run, SELECT_SCRIPT, Wrk, insert_script};
use crate::system::{Conditions, help_default, load_average, peak_rss_kib, start_to_ready};

/// Benchmarks the frontend against pgbench running the same SQL on the same database.
///
/// Needs wrk and PostgreSQL (with pgbench): tests/bench/setup.sh installs them.
/// Run it in release: `cargo run --release -p bench` (the service binaries are built in the
/// same profile, or taken from $FRONTEND_BIN / $PRIVATE_SERVICE_BIN).
#[derive(Parser, Debug)]
#[command(name = "bench")]
struct Args {
    /// Tiny setting for CI (1,000 rows, 8 connections, 1 s runs): checks that the suite runs
    /// end to end, not the figures. Writes to target/bench/quick.md unless --out is given.
    #[arg(long)]
    quick: bool,

    /// Table sizes to prefill, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000_u64, 100_000, 1_000_000])]
    rows: Vec<u64>,

    /// Concurrent connections (wrk connections = pgbench clients), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [16_u32, 32, 64, 256])]
    connections: Vec<u32>,

    /// Table size of the VPC profile.
    #[arg(long, default_value_t = 100_000)]
    vpc_rows: u64,

    /// Concurrent connections of the VPC profile, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [16_u32, 64, 256])]
    vpc_connections: Vec<u32>,

    /// Length of each load run, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u32,

    /// PostgreSQL with fsync and synchronous_commit on, as in production (`--durable false`
    /// runs it without durability: no fsync, commits not waited for).
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    durable: bool,

    /// Extra environment for the frontend, e.g. `--frontend-env DB_WRITERS=3` (repeatable):
    /// for trying settings. Defaults are the frontend's own.
    #[arg(long = "frontend-env", value_parser = parse_assignment)]
    frontend_env: Vec<(String, String)>,

    /// Frontend builds to compare under the same loads, as NAME=PATH, comma-separated (tests/bench/run
    /// passes the glibc and static musl builds, with and without mimalloc).
    #[arg(long, value_delimiter = ',', value_parser = builds::parse_build)]
    compare_builds: Vec<builds::Build>,

    /// Where to write the markdown report [default: tests/bench/RESULTS.md]
    #[arg(long)]
    out: Option<PathBuf>,
}

fn parse_assignment(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("expected NAME=VALUE, got {text:?}"))
}

const DATABASE: &str = "apprunnerdemo";
const ROLE: &str = "apprunnerdemo";

fn main() {
    let mut args = Args::parse();
    if args.quick {
        args.rows = vec![1_000];
        args.connections = vec![8];
        args.vpc_rows = 1_000;
        args.vpc_connections = vec![8];
        args.seconds = 1;
    }
    match run(&args) {
        Ok(path) => println!("bench: report written to {}", path.display()),
        Err(error) => {
            eprintln!("bench: {error:#}");
            std::process::exit(1);
        }
    }
}

fn run(args: &Args) -> Result<PathBuf> {
    let began = Instant::now();
    let root = harness::workspace_root();
    let out = args.out.clone().unwrap_or_else(|| {
        if args.quick {
            root.join("target/bench/quick.md")
        } else {
            root.join("tests/bench/RESULTS.md")
        }
    });
    let work = tempfile::Builder::new()
        .prefix("bench-")
        .tempdir()
        .context("creating a work directory")?;

    let mut conditions = Conditions::machine();
    say("building or locating the release binaries");
    let frontend_bin = harness::binary("frontend")?;
    let private_bin = harness::binary("private-service")?;
    let wrk = Wrk::new(work.path())?;

    say("starting PostgreSQL");
    let pg = Postgres::start()?;
    let password = "bench-password-not-secret";
    pg.create_role(ROLE, password)?;
    pg.create_named_database(DATABASE, ROLE)?;
    configure_durability(&pg, args.durable)?;
    let pgbench = Pgbench::new(work.path(), pg.port(), ROLE, password, DATABASE)?;
    let mut admin = pg.admin_client(DATABASE)?;
    let server_version: String = admin.query_one("SHOW server_version", &[])?.get(0);

    let mut frontend_env: Vec<(OsString, OsString)> = [
        ("DB_HOST", pg.host().to_owned()),
        ("DB_PORT", pg.port().to_string()),
        ("DB_NAME", DATABASE.to_owned()),
        ("DB_USER", ROLE.to_owned()),
        ("DB_PASS", password.to_owned()),
        ("DB_SSLMODE", "disable".to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.into(), value.into()))
    .collect();
    frontend_env.extend(
        args.frontend_env
            .iter()
            .map(|(name, value)| (name.into(), value.into())),
    );
    let setting = |name: &str| -> String {
        args.frontend_env
            .iter()
            .rev()
            .find(|(variable, _)| variable == name)
            .map(|(_, value)| value.clone())
            .or_else(|| help_default(&frontend_bin, name))
            .unwrap_or_else(|| "?".to_owned())
    };
    let writers: u32 = setting("DB_WRITERS").parse().unwrap_or(1);
    let pool_size: u32 = setting("DB_POOL_SIZE").parse().unwrap_or(1);
    let frontend_settings = ["DB_POOL_SIZE", "DB_WRITERS", "DB_MAX_BATCH", "BLOCKING_THREADS"]
        .iter()
        .map(|name| format!("{name}={}", setting(name)))
        .collect::<Vec<_>>()
        .join(", ");

    conditions.add(
        "PostgreSQL",
        format!(
            "{server_version} on 127.0.0.1, {}",
            if args.durable {
                "fsync=on, synchronous_commit=on, full_page_writes=on (durable commits)"
            } else {
                "fsync=off, synchronous_commit=off, full_page_writes=off (commits not durable)"
            }
        ),
    );
    conditions.add(
        "load generators",
        format!("{}; {}", wrk.version(), pgbench.version()),
    );
    conditions.add("frontend settings", frontend_settings);
    conditions.add(
        "run",
        format!(
            "{} s per load run, wrk threads = pgbench threads = min(2, connections); load generator, services and PostgreSQL share the machine",
            args.seconds
        ),
    );

    say("measuring start-to-ready times");
    let ready_port = harness::free_port()?;
    let repeats = if args.quick { 3 } else { 15 };
    let frontend_ready = start_to_ready(&frontend_bin, &frontend_env, ready_port, repeats)?;
    let metadata = EcsMetadata::start()?;
    let private_env: Vec<(OsString, OsString)> =
        vec![("ECS_CONTAINER_METADATA_URI_V4".into(), metadata.uri_v4().into())];
    let private_ready = start_to_ready(&private_bin, &private_env, ready_port, repeats)?;

    say("starting the private service and the frontend");
    let private_service = ServiceCommand::new(&private_bin)
        .envs(private_env.iter().cloned())
        .env("RUST_LOG", "warn")
        .spawn()?;
    let frontend = ServiceCommand::new(&frontend_bin)
        .envs(frontend_env.iter().cloned())
        .env("ECSPRIVATESERVICE", private_service.url(""))
        .spawn()?;
    wait_for_schema(&frontend)?;

    let mut visits = Vec::new();
    let mut recents = Vec::new();
    let mut rss_after = Vec::new();
    for &rows in &args.rows {
        say(&format!("N = {rows}: prefilling"));
        prefill(&mut admin, rows)?;
        for &connections in &args.connections {
            say(&format!(
                "N = {rows}, {connections} connections: GET /recent-visits vs pgbench SELECT"
            ));
            let http = wrk.run(&frontend.url("/recent-visits"), connections, args.seconds)?;
            let sql = pgbench.run("select", SELECT_SCRIPT, connections, args.seconds)?;
            recents.push(RecentRow {
                rows,
                connections,
                http,
                sql,
            });
        }
        for &connections in &args.connections {
            say(&format!(
                "N = {rows}, {connections} connections: GET / vs pgbench INSERT"
            ));
            let (xid_before, rows_before) = write_counters(&mut admin)?;
            let http = wrk.run(&frontend.url("/"), connections, args.seconds)?;
            let (xid_after, rows_after) = write_counters(&mut admin)?;
            let inserted = rows_after.saturating_sub(rows_before);
            let transactions = xid_after.saturating_sub(xid_before).max(1);
            let batch = inserted as f64 / transactions as f64;
            let single = pgbench.run("insert-1", &insert_script(1), connections, args.seconds)?;
            let batch_rows = (batch.round() as usize).max(1);
            let batched = pgbench.run(
                &format!("insert-{batch_rows}"),
                &insert_script(batch_rows),
                writers,
                args.seconds,
            )?;
            visits.push(VisitRow {
                rows,
                connections,
                http,
                committed: inserted,
                batch,
                single,
                batched,
                batch_rows,
            });
        }
        rss_after.push((rows, peak_rss_kib(frontend.pid())?));
    }

    say("GET /ecs-private-service vs the private service directly");
    let mut private = Vec::new();
    for connections in private_connections(args) {
        let through = wrk.run(&frontend.url("/ecs-private-service"), connections, args.seconds)?;
        let direct = wrk.run(&private_service.url("/"), connections, args.seconds)?;
        private.push((connections, through, direct));
    }
    let peak_rss = peak_rss_kib(frontend.pid())?;
    drop(frontend);
    let builds = builds::compare(
        &args.compare_builds,
        &wrk,
        &frontend_env,
        &private_service.url(""),
        args.seconds,
    )?;

    let vpc = vpc::run(&vpc::Inputs {
        pg: &pg,
        wrk: &wrk,
        work_dir: work.path(),
        frontend_bin: &frontend_bin,
        frontend_env: &frontend_env,
        private_service: SocketAddr::from((Ipv4Addr::LOCALHOST, private_service.port())),
        database: DATABASE,
        role: ROLE,
        password,
        rows: args.vpc_rows,
        connections: &args.vpc_connections,
        seconds: args.seconds,
        pool_size,
    })?;
    conditions.add("load average at end", load_average());
    conditions.add("duration", format!("{:.0} s", began.elapsed().as_secs_f64()));

    let report = Report {
        conditions,
        writers,
        visits,
        recents,
        private,
        frontend_ready,
        private_ready,
        rss_after,
        peak_rss,
        vpc,
        builds,
        quick: args.quick,
    }
    .markdown();
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, &report).with_context(|| format!("writing {}", out.display()))?;
    println!("{report}");
    drop(private_service);
    drop(metadata);
    Ok(out)
}

fn private_connections(args: &Args) -> Vec<u32> {
    if args.quick { vec![8] } else { vec![1, 64] }
}

fn say(what: &str) {
    static STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let since = STARTED.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("bench [{since:5.0} s, load {}]: {what}", load_average());
}

/// Durable commits as in production, or none at all (no fsync, no synchronous commit).
fn configure_durability(pg: &Postgres, durable: bool) -> Result<()> {
    let value = if durable { "on" } else { "off" };
    pg.with_admin_client("postgres", |client| {
        for setting in ["fsync", "synchronous_commit", "full_page_writes"] {
            client.batch_execute(&format!("ALTER SYSTEM SET {setting} = {value}"))?;
        }
        client.batch_execute("SELECT pg_reload_conf()")?;
        Ok(())
    })
}

/// Waits until the frontend has migrated the schema (its warm-up connection does that).
fn wait_for_schema(frontend: &Service) -> Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = agent
            .get(frontend.url("/recent-visits"))
            .call()
            .map(|response| response.status().as_u16())
            .unwrap_or(0);
        if status == 200 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("GET /recent-visits did not answer 200 within 30 s (last status {status})");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Exactly `rows` visits, oldest to newest a second apart and all older than now (so new visits
/// land at the index's right edge, as in production); vacuumed, analysed, checkpointed.
fn prefill(admin: &mut postgres::Client, rows: u64) -> Result<()> {
    let rows = i64::try_from(rows).context("row count")?;
    admin.batch_execute("TRUNCATE access")?;
    admin.execute(
        "INSERT INTO access (last_update, user_agent) \
         SELECT now() - make_interval(secs => g), $1 || ' #' || (g % 1000) \
         FROM generate_series(1, $2::bigint) AS g",
        &[&load::USER_AGENT, &rows],
    )?;
    admin.batch_execute("VACUUM ANALYZE access")?;
    admin.batch_execute("CHECKPOINT")?;
    Ok(())
}

/// Next transaction id (every write transaction takes one) and the table's row count.
fn write_counters(admin: &mut postgres::Client) -> Result<(u64, u64)> {
    let row = admin.query_one(
        "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint, (SELECT count(*) FROM access)",
        &[],
    )?;
    let xid: i64 = row.get(0);
    let count: i64 = row.get(1);
    Ok((xid as u64, count as u64))
}

struct VisitRow {
    rows: u64,
    connections: u32,
    http: Run,
    /// Rows the frontend committed during its run (counted in the table).
    committed: u64,
    /// Rows per transaction the frontend committed (observed).
    batch: f64,
    single: Run,
    batched: Run,
    batch_rows: usize,
}

struct RecentRow {
    rows: u64,
    connections: u32,
    http: Run,
    sql: Run,
}

struct Report {
    conditions: Conditions,
    writers: u32,
    visits: Vec<VisitRow>,
    recents: Vec<RecentRow>,
    private: Vec<(u32, Run, Run)>,
    frontend_ready: Vec<Duration>,
    private_ready: Vec<Duration>,
    rss_after: Vec<(u64, u64)>,
    peak_rss: u64,
    vpc: vpc::Profile,
    builds: Vec<builds::Measured>,
    quick: bool,
}

/// `/ecs-private-service` through the frontend against the private service called directly, per
/// connection count.
fn private_service_table(private: &[(u32, Run, Run)]) -> String {
    let mut md = String::from(
        "| conns | through frontend req/s | p50 ms | p99 ms | errors | direct req/s | p50 ms | p99 ms | added p50 ms | added p99 ms |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (connections, through, direct) in private {
        let _ = writeln!(
            md,
            "| {connections} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            rate(through.per_second),
            ms(through.p50_us),
            ms(through.p99_us),
            through.errors,
            rate(direct.per_second),
            ms(direct.p50_us),
            ms(direct.p99_us),
            ms(through.p50_us - direct.p50_us),
            ms(through.p99_us - direct.p99_us),
        );
    }
    md
}

fn ms(us: f64) -> String {
    format!("{:.2}", us / 1000.0)
}

fn rate(value: f64) -> String {
    format!("{value:.0}")
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

impl Report {
    /// A smoke run's figures come from one-second loads on a tiny table: they show that every
    /// part of the suite runs, and judging them against the targets would only mislead.
    fn verdict(&self, holds: bool) -> &'static str {
        match (self.quick, holds) {
            (true, _) => "not judged (smoke run)",
            (false, true) => "holds",
            (false, false) => "does not hold",
        }
    }

    fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# Benchmark results\n");
        if self.quick {
            let _ = writeln!(
                md,
                "**Quick setting (CI smoke run): these figures only show that the suite runs; they are not measurements.**\n"
            );
        }
        let _ = writeln!(
            md,
            "Written by `cargo run --release -p bench` (tests/bench). Every figure below comes from the run described here.\n"
        );
        let _ = writeln!(md, "## Conditions\n\n| | |\n|---|---|");
        for (name, value) in &self.conditions.lines {
            let _ = writeln!(md, "| {name} | {value} |");
        }

        let _ = writeln!(
            md,
            "\n## `GET /` (group commit) vs pgbench INSERT\n\n\
             Each visit is answered only after the transaction holding its row commits. pgbench runs the \
             frontend's statement (one round trip, committed on its own: `INSERT INTO visit_batch …` and \
             `INSERT INTO access … SELECT … FROM unnest(…)` in one `WITH`) as a prepared statement. \
             *batch* = rows per transaction the frontend committed (rows counted in the table ÷ transaction ids used); \
             the batched limit is pgbench inserting batches of that size on {} connection(s), as many as the frontend has writers.\n",
            self.writers
        );
        let _ = writeln!(
            md,
            "| N rows | conns | GET / req/s | p50 ms | p99 ms | errors | batch | pgbench 1-row tx/s | p50 ms | p99 ms | **× pgbench** | pgbench batched rows/s | frontend fraction |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for row in &self.visits {
            let batched_rows = row.batched.per_second * row.batch_rows as f64;
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {:.1} | {} | {} | {} | **{:.2}** | {} | {:.2} |",
                row.rows,
                row.connections,
                rate(row.http.per_second),
                ms(row.http.p50_us),
                ms(row.http.p99_us),
                row.http.errors + row.single.errors,
                row.batch,
                rate(row.single.per_second),
                ms(row.single.p50_us),
                ms(row.single.p99_us),
                row.http.per_second / row.single.per_second.max(1e-9),
                rate(batched_rows),
                row.http.per_second / batched_rows.max(1e-9),
            );
        }
        let committed: u64 = self.visits.iter().map(|row| row.committed).sum();
        let answered: u64 = self
            .visits
            .iter()
            .map(|row| row.http.completed - row.http.errors.min(row.http.completed))
            .sum();
        let _ = writeln!(
            md,
            "\nRows committed during the GET / runs: {committed}; 200 answers counted by wrk: {answered} \
             (wrk stops with requests in flight, whose rows commit but are not counted, so committed ≥ answered)."
        );

        let _ = writeln!(
            md,
            "\n## `GET /recent-visits` vs pgbench SELECT\n\n\
             pgbench runs the same SELECT (`… ORDER BY last_update DESC LIMIT 10`, prepared). The table holds exactly N rows.\n"
        );
        let _ = writeln!(
            md,
            "| N rows | conns | req/s | p50 ms | p99 ms | errors | pgbench tx/s | p50 ms | p99 ms | **× pgbench** |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for row in &self.recents {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | **{:.2}** |",
                row.rows,
                row.connections,
                rate(row.http.per_second),
                ms(row.http.p50_us),
                ms(row.http.p99_us),
                row.http.errors + row.sql.errors,
                rate(row.sql.per_second),
                ms(row.sql.p50_us),
                ms(row.sql.p99_us),
                row.http.per_second / row.sql.per_second.max(1e-9),
            );
        }

        let _ = writeln!(
            md,
            "\n## `GET /ecs-private-service` vs the private service directly\n\n\
             The private service reads a local stand-in for the ECS task metadata endpoint on every call.\n"
        );
        md.push_str(&private_service_table(&self.private));

        let fmt_ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
        let worst = |times: &[Duration]| times.iter().max().copied().unwrap_or_default();
        let _ = writeln!(
            md,
            "\n## Start-to-ready and memory\n\n\
             Ready = from exec to the first 200 from `GET /health` (polled every 0.2 ms), {} starts each.\n\n\
             | | median ms | max ms |\n|---|---:|---:|\n\
             | frontend | {} | {} |\n| private-service | {} | {} |\n",
            self.frontend_ready.len(),
            fmt_ms(median(&self.frontend_ready)),
            fmt_ms(worst(&self.frontend_ready)),
            fmt_ms(median(&self.private_ready)),
            fmt_ms(worst(&self.private_ready)),
        );
        let _ = writeln!(md, "| frontend peak RSS (VmHWM) | MiB |\n|---|---:|");
        for (rows, kib) in &self.rss_after {
            let _ = writeln!(md, "| after the N = {rows} runs | {:.1} |", *kib as f64 / 1024.0);
        }
        let _ = writeln!(md, "| at the end | {:.1} |", self.peak_rss as f64 / 1024.0);

        md.push_str(&self.targets());
        let loopback_at_64 = self
            .visits
            .iter()
            .filter(|row| row.connections == 64)
            .map(|row| row.http.per_second)
            .fold(None, |best: Option<f64>, value| {
                Some(best.map_or(value, |best| best.max(value)))
            });
        md.push_str(&self.vpc.markdown(loopback_at_64, |holds| self.verdict(holds)));
        if !self.builds.is_empty() {
            md.push_str(&builds::markdown(&self.builds));
        }
        md
    }

    /// Each target of issue 6, checked against this run's figures.
    fn targets(&self) -> String {
        let mut md = String::from(
            "\n## Targets, checked against this run\n\n| target | measured | verdict |\n|---|---|---|\n",
        );
        let ratios: Vec<String> = self
            .visits
            .iter()
            .map(|row| {
                format!(
                    "{:.2}× (N={}, c={})",
                    row.http.per_second / row.single.per_second.max(1e-9),
                    row.rows,
                    row.connections
                )
            })
            .collect();
        let all_double = self
            .visits
            .iter()
            .all(|row| row.http.per_second >= 2.0 * row.single.per_second);
        let _ = writeln!(
            md,
            "| GET / ≥ 2× pgbench 1-row INSERT, same concurrency | {} | {} |",
            ratios.join(", "),
            self.verdict(all_double)
        );
        let at_64: Vec<&VisitRow> = self.visits.iter().filter(|row| row.connections == 64).collect();
        if !at_64.is_empty() {
            let worst = at_64.iter().map(|row| row.http.p99_us).fold(0.0, f64::max);
            let _ = writeln!(
                md,
                "| GET / p99 ≤ 5 ms at 64 connections | worst {} ms | {} |",
                ms(worst),
                self.verdict(worst <= 5000.0)
            );
        }
        let by_connections: BTreeMap<u32, Vec<&RecentRow>> =
            self.recents.iter().fold(BTreeMap::new(), |mut map, row| {
                map.entry(row.connections).or_insert_with(Vec::new).push(row);
                map
            });
        let mut flat = true;
        let mut slowdowns = Vec::new();
        for (connections, rows) in &by_connections {
            let smallest = rows.iter().min_by_key(|row| row.rows);
            let largest = rows.iter().max_by_key(|row| row.rows);
            if let (Some(small), Some(large)) = (smallest, largest)
                && small.rows != large.rows
            {
                let slowdown = small.http.per_second / large.http.per_second.max(1e-9);
                flat &= slowdown <= 1.2;
                slowdowns.push(format!(
                    "{slowdown:.2}× (c={connections}, N {}→{})",
                    small.rows, large.rows
                ));
            }
        }
        if !slowdowns.is_empty() {
            let _ = writeln!(
                md,
                "| /recent-visits flat in N (≤ 1.2× slowdown) | {} | {} |",
                slowdowns.join(", "),
                self.verdict(flat)
            );
        }
        let recent_ratios: Vec<String> = self
            .recents
            .iter()
            .map(|row| {
                format!(
                    "{:.2}× (N={}, c={})",
                    row.http.per_second / row.sql.per_second.max(1e-9),
                    row.rows,
                    row.connections
                )
            })
            .collect();
        let recent_ok = self
            .recents
            .iter()
            .all(|row| row.http.per_second >= row.sql.per_second);
        let _ = writeln!(
            md,
            "| /recent-visits ≥ 1× pgbench SELECT | {} | {} |",
            recent_ratios.join(", "),
            self.verdict(recent_ok)
        );
        let before_fan_out = self.rss_after.iter().map(|(_, kib)| *kib).max().unwrap_or(0);
        let rss_mib = before_fan_out as f64 / 1024.0;
        let _ = writeln!(
            md,
            "| peak RSS ≤ 32 MiB (all loads but the private-service fan-out: {:.1} MiB after it) | {rss_mib:.1} MiB | {} |",
            self.peak_rss as f64 / 1024.0,
            self.verdict(rss_mib <= 32.0)
        );
        let ready = median(&self.frontend_ready).max(median(&self.private_ready));
        let _ = writeln!(
            md,
            "| ready ≤ 50 ms after exec | frontend {:.1} ms, private-service {:.1} ms (medians) | {} |",
            median(&self.frontend_ready).as_secs_f64() * 1000.0,
            median(&self.private_ready).as_secs_f64() * 1000.0,
            self.verdict(ready <= Duration::from_millis(50))
        );
        md
    }
}
