//! The two load generators: `wrk` for HTTP, `pgbench` for the same SQL straight to PostgreSQL.
//! Both run for a fixed time with a fixed number of connections and are parsed into [`Run`].

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// What one bounded load run measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Run {
    /// Completed requests (HTTP) or transactions (pgbench) per second.
    pub per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Completed requests or transactions in the run (successful or not).
    pub completed: u64,
    /// Non-2xx answers, socket errors and timeouts (HTTP), failed transactions (pgbench).
    pub errors: u64,
}

/// `wrk` with a `done` hook that prints the summary as one JSON line.
pub struct Wrk {
    program: PathBuf,
    script: PathBuf,
}

const WRK_SCRIPT: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_JSON {\"requests\":%d,\"duration_us\":%d,\"status\":%d,\"connect\":%d,\"read\":%d,\"write\":%d,\"timeout\":%d,\"p50_us\":%d,\"p99_us\":%d}\n",
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"#;

/// The User-Agent every visit carries, from wrk and from pgbench alike (a realistic length).
pub const USER_AGENT: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36 bench";

impl Wrk {
    pub fn new(work_dir: &Path) -> Result<Self> {
        let program = which("wrk")
            .context("wrk is not installed: run tests/bench/setup.sh (or `apt-get install -y wrk`)")?;
        let script = work_dir.join("summary.lua");
        fs::write(&script, WRK_SCRIPT).context("writing the wrk summary script")?;
        Ok(Self { program, script })
    }

    pub fn version(&self) -> String {
        // `wrk -v` prints its banner and exits non-zero.
        Command::new(&self.program)
            .arg("-v")
            .output()
            .map(|output| {
                let text = String::from_utf8_lossy(&output.stdout).into_owned()
                    + &String::from_utf8_lossy(&output.stderr);
                text.lines().next().unwrap_or("wrk").trim().to_owned()
            })
            .unwrap_or_else(|_| "wrk (version unknown)".to_owned())
    }

    /// `connections` keep-alive connections on `min(2, connections)` threads for `seconds`.
    pub fn run(&self, url: &str, connections: u32, seconds: u32) -> Result<Run> {
        let threads = connections.clamp(1, 2);
        let output = Command::new(&self.program)
            .args(["-t", &threads.to_string(), "-c", &connections.to_string()])
            .args(["-d", &format!("{seconds}s"), "--timeout", "5s"])
            .args(["-H", &format!("User-Agent: {USER_AGENT}")])
            .arg("-s")
            .arg(&self.script)
            .arg(url)
            .output()
            .context("running wrk")?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!(
                "wrk {url} failed ({}): {stdout}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let json = stdout
            .lines()
            .find_map(|line| line.strip_prefix("BENCH_JSON "))
            .with_context(|| format!("wrk printed no summary: {stdout}"))?;
        let summary: Value = serde_json::from_str(json).context("parsing the wrk summary")?;
        let field = |name: &str| summary[name].as_u64().unwrap_or(0);
        let seconds = field("duration_us") as f64 / 1e6;
        Ok(Run {
            per_second: if seconds > 0.0 {
                field("requests") as f64 / seconds
            } else {
                0.0
            },
            p50_us: field("p50_us") as f64,
            p99_us: field("p99_us") as f64,
            completed: field("requests"),
            errors: ["status", "connect", "read", "write", "timeout"]
                .iter()
                .map(|name| field(name))
                .sum(),
        })
    }
}

/// `pgbench` against the benchmark database, with custom scripts and per-transaction logs
/// (for percentiles).
pub struct Pgbench {
    program: PathBuf,
    work_dir: PathBuf,
    port: u16,
    user: String,
    password: String,
    database: String,
}

impl Pgbench {
    pub fn new(work_dir: &Path, port: u16, user: &str, password: &str, database: &str) -> Result<Self> {
        let program = find_pgbench().context(
            "pgbench is not installed: run tests/bench/setup.sh (or `apt-get install -y postgresql`)",
        )?;
        Ok(Self {
            program,
            work_dir: work_dir.to_owned(),
            port,
            user: user.to_owned(),
            password: password.to_owned(),
            database: database.to_owned(),
        })
    }

    pub fn version(&self) -> String {
        Command::new(&self.program)
            .arg("--version")
            .output()
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
            .unwrap_or_else(|_| "pgbench (version unknown)".to_owned())
    }

    /// Runs `script` (pgbench syntax, prepared statements) on `clients` connections for `seconds`.
    pub fn run(&self, name: &str, script: &str, clients: u32, seconds: u32) -> Result<Run> {
        let script_path = self.work_dir.join(format!("{name}.sql"));
        fs::write(&script_path, script).context("writing a pgbench script")?;
        let log_dir = self.work_dir.join(format!("log-{name}-{clients}"));
        let _ = fs::remove_dir_all(&log_dir);
        fs::create_dir_all(&log_dir).context("creating the pgbench log directory")?;
        let threads = clients.clamp(1, 2);
        let output = Command::new(&self.program)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", &self.user])
            .args([
                "-n",
                "-M",
                "prepared",
                "-c",
                &clients.to_string(),
                "-j",
                &threads.to_string(),
            ])
            .args(["-T", &seconds.to_string()])
            .args(["-D", &format!("ua={USER_AGENT}")])
            .arg("-l")
            .arg(format!("--log-prefix={}", log_dir.join("tx").display()))
            .arg("-f")
            .arg(&script_path)
            .arg(&self.database)
            .env("PGPASSWORD", &self.password)
            .current_dir(&self.work_dir)
            .output()
            .context("running pgbench")?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!(
                "pgbench {name} failed ({}): {stdout}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let number_after = |prefix: &str| -> Option<f64> {
            stdout
                .lines()
                .find_map(|line| line.trim().strip_prefix(prefix))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|value| value.parse().ok())
        };
        let per_second =
            number_after("tps = ").with_context(|| format!("pgbench printed no tps: {stdout}"))?;
        let completed = number_after("number of transactions actually processed:").unwrap_or(0.0) as u64;
        let errors = number_after("number of failed transactions:").unwrap_or(0.0) as u64;
        let mut latencies = transaction_latencies(&log_dir)?;
        let _ = fs::remove_dir_all(&log_dir);
        latencies.sort_unstable();
        Ok(Run {
            per_second,
            p50_us: percentile(&latencies, 0.50),
            p99_us: percentile(&latencies, 0.99),
            completed,
            errors,
        })
    }
}

/// Latency (µs, the third column) of every transaction in pgbench's `-l` logs.
fn transaction_latencies(dir: &Path) -> Result<Vec<u64>> {
    let mut latencies = Vec::new();
    for entry in fs::read_dir(dir).context("reading pgbench logs")? {
        let text = fs::read_to_string(entry?.path()).context("reading a pgbench log")?;
        latencies.extend(
            text.lines()
                .filter_map(|line| line.split_whitespace().nth(2))
                .filter_map(|value| value.parse::<u64>().ok()),
        );
    }
    Ok(latencies)
}

fn percentile(sorted: &[u64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index] as f64
}

/// The statement the frontend's visit writers send (`crates/frontend/src/db/connection.rs`,
/// `INSERT_VISITS`: one statement committed on its own that stores the batch and its id, one round
/// trip), with the arrays built server-side for a batch of `rows` visits sharing one timestamp, as
/// a batch does. The batch id is `gen_random_uuid()` (PostgreSQL 15 has no UUIDv7; the frontend's
/// ids are time-ordered, so its primary-key inserts land at the index's right edge).
pub fn insert_script(rows: usize) -> String {
    format!(
        "WITH batch AS (INSERT INTO visit_batch (id) VALUES (gen_random_uuid()) ON CONFLICT (id) DO NOTHING RETURNING id), \
         inserted AS (INSERT INTO access (last_update, user_agent) SELECT visit.at, visit.user_agent \
         FROM unnest(array_fill(clock_timestamp(), ARRAY[{rows}]), array_fill(:ua::varchar, ARRAY[{rows}])) \
         AS visit (at, user_agent), batch RETURNING 1) \
         SELECT count(*) FROM inserted;\n"
    )
}

/// The SQL behind `GET /recent-visits`, verbatim.
pub const SELECT_SCRIPT: &str =
    "SELECT last_update, user_agent FROM access ORDER BY last_update DESC LIMIT 10;\n";

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// `$PG_BIN/pgbench`, else the newest `/usr/lib/postgresql/*/bin/pgbench` (the one matching the
/// server the harness starts), else `pgbench` on PATH.
fn find_pgbench() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        let candidate = PathBuf::from(dir).join("pgbench");
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let candidate = entry.path().join("bin/pgbench");
            candidate.is_file().then_some((version, candidate))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, path)| path).or_else(|| which("pgbench"))
}
