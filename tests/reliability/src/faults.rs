//! A fault-schedule checker, Jepsen's way on loopback: a seeded random schedule of faults against
//! a steady load on `GET /`, then one verdict over the whole history. The faults are those a
//! frontend meets in production — sessions ended, the writer restarted (fast, or crashed), the
//! link frozen and then released or severed, a FATAL right after a commit, statements timing
//! out, a failover to the synchronous reader, the frontend replaced (SIGTERM) — with random gaps,
//! so each lands in a different moment of the write path. The verdict: every 200 is exactly one
//! row, nothing is stored twice, an answer that said nothing was stored has no row, outcomes left
//! unknown (told so, or never answered) are counted and bounded, and visits succeed again after
//! the last fault. The seed is printed; the same seed makes the same schedule.

use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use harness::{AfterCommit, Lifecycle};

use crate::aurora::Cluster;
use crate::stack::terminate_frontend_sessions;
use crate::{Accounting, Load, LoadSpec, Report, Target, only_200_from};

/// Clients on `GET /` throughout: each has at most one request in flight, so one fault can leave
/// at most this many outcomes unknown.
pub const CLIENTS: usize = 16;

/// The frontend's settings under the schedule: statements time out soon (so a lock makes them),
/// and a batch whose answer was lost is resolved within seconds.
const FRONTEND_ENV: [(&str, &str); 3] = [
    ("DB_STATEMENT_TIMEOUT", "500ms"),
    ("DB_CONNECT_TIMEOUT", "5s"),
    ("DB_ACQUIRE_TIMEOUT", "2s"),
];

/// After the last fault the load goes on this long; its last second must be all 200s.
const CALM: Duration = Duration::from_secs(4);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Every session of the frontend ended (`pg_terminate_backend`, 57P01).
    TerminateSessions,
    /// The writer restarted: fast (sessions ended in order) or crashed (`-m immediate`).
    Restart { crash: bool, down: Duration },
    /// No byte carried for `held`, then released (late) or severed (connections closed).
    Freeze { held: Duration, sever: bool },
    /// The answer to the next commit replaced by a FATAL 58030.
    FatalAfterCommit,
    /// The visits table locked for `held`: statements in the meantime time out (57014).
    LockVisits { held: Duration },
    /// `aws rds failover-db-cluster`: the reader promoted, the endpoint moved after 1 s.
    Failover,
    /// SIGTERM to the frontend, and the same frontend started again.
    ReplaceFrontend,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TerminateSessions => write!(f, "terminate sessions"),
            Self::Restart { crash: true, down } => write!(f, "crash the writer, down {down:?}"),
            Self::Restart { crash: false, down } => write!(f, "restart the writer, down {down:?}"),
            Self::Freeze { held, sever: false } => write!(f, "freeze the link {held:?}, release"),
            Self::Freeze { held, sever: true } => write!(f, "freeze the link {held:?}, sever"),
            Self::FatalAfterCommit => write!(f, "FATAL 58030 after a commit"),
            Self::LockVisits { held } => write!(f, "lock the visits {held:?}"),
            Self::Failover => write!(f, "fail over"),
            Self::ReplaceFrontend => write!(f, "SIGTERM the frontend, start it again"),
        }
    }
}

/// The faults and the pause before each, drawn from a seed.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub seed: u64,
    pub steps: Vec<(Duration, Fault)>,
}

impl Schedule {
    /// `faults` faults, each after a pause of 0-1.5 s, at most one failover (the harness has one
    /// reader to promote).
    pub fn from_seed(seed: u64, faults: usize) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut failed_over = false;
        let mut steps = Vec::with_capacity(faults);
        while steps.len() < faults {
            let millis = |rng: &mut fastrand::Rng, range: std::ops::RangeInclusive<u64>| {
                Duration::from_millis(rng.u64(range))
            };
            let fault = match rng.u8(0..7) {
                0 => Fault::TerminateSessions,
                1 => Fault::Restart {
                    crash: rng.bool(),
                    down: millis(&mut rng, 0..=2000),
                },
                2 => Fault::Freeze {
                    held: millis(&mut rng, 200..=3000),
                    sever: rng.bool(),
                },
                3 => Fault::FatalAfterCommit,
                4 => Fault::LockVisits {
                    held: millis(&mut rng, 200..=1500),
                },
                5 if !failed_over => {
                    failed_over = true;
                    Fault::Failover
                }
                5 => continue,
                _ => Fault::ReplaceFrontend,
            };
            steps.push((millis(&mut rng, 0..=1500), fault));
        }
        Self { seed, steps }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seed {}:", self.seed)?;
        for (pause, fault) in &self.steps {
            write!(f, " +{pause:?} {fault};")?;
        }
        Ok(())
    }
}

/// What one schedule did: the history's accounting and summary.
pub struct Run {
    pub schedule: Schedule,
    pub accounting: Accounting,
    pub summary: String,
}

/// Runs `schedule` against a fresh cluster (writer, synchronous reader, endpoint) and frontend
/// under load, and judges the whole history. An `Err` names the seed, the violation and the
/// frontend's last log lines.
pub fn run(schedule: &Schedule) -> Result<Run> {
    let mut cluster = Cluster::start(Lifecycle::default(), true, &FRONTEND_ENV)
        .with_context(|| format!("starting the cluster for {schedule}"))?;
    let mut spec = LoadSpec::new(
        cluster.addr(),
        vec![Target::visits(CLIENTS)],
        Duration::from_secs(600),
    );
    spec.request_timeout = Duration::from_secs(30);
    let load = Load::start(spec)?;
    let applied = apply(&mut cluster, schedule);
    let last_fault_ended = Instant::now();
    std::thread::sleep(CALM);
    load.stop();
    let report = load.finish()?;
    let judged = applied.and_then(|()| judge(&cluster, &report, schedule, last_fault_ended));
    match judged {
        Ok(accounting) => Ok(Run {
            schedule: schedule.clone(),
            accounting,
            summary: report.summary(),
        }),
        Err(error) => bail!(
            "{schedule}\n{error:#}\n{}\nthe frontend's last lines:\n{}",
            report.summary(),
            harness::last_lines(&cluster.frontend_logs(), 40)
        ),
    }
}

fn apply(cluster: &mut Cluster, schedule: &Schedule) -> Result<()> {
    for (pause, fault) in &schedule.steps {
        std::thread::sleep(*pause);
        apply_one(cluster, *fault).with_context(|| format!("applying \"{fault}\""))?;
    }
    Ok(())
}

fn apply_one(cluster: &mut Cluster, fault: Fault) -> Result<()> {
    match fault {
        Fault::TerminateSessions => {
            terminate_frontend_sessions(cluster.writer(), &cluster.db)?;
        }
        Fault::Restart { crash: true, down } => {
            cluster.crash(down)?;
        }
        Fault::Restart { crash: false, down } => {
            cluster.reboot(down)?;
        }
        Fault::Freeze { held, sever } => {
            cluster.endpoint.freeze();
            std::thread::sleep(held);
            if sever {
                cluster.endpoint.sever();
            } else {
                cluster.endpoint.release();
            }
        }
        Fault::FatalAfterCommit => {
            let before = cluster.endpoint.commit_faults();
            cluster.endpoint.after_next_commit(AfterCommit::Fatal("58030"));
            let started = Instant::now();
            // Under load a batch commits within milliseconds; one that does not is left armed
            // for a later commit.
            while cluster.endpoint.commit_faults() == before && started.elapsed() < Duration::from_secs(3) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Fault::LockVisits { held } => {
            cluster.writer().with_admin_client(&cluster.db, move |client| {
                let mut transaction = client.transaction()?;
                transaction.batch_execute("LOCK TABLE access IN ACCESS EXCLUSIVE MODE")?;
                std::thread::sleep(held);
                Ok(transaction.commit()?)
            })?;
        }
        Fault::Failover if cluster.can_fail_over() => {
            cluster.failover(Duration::from_secs(1))?;
        }
        Fault::Failover => bail!("a second failover: the harness has one reader to promote"),
        Fault::ReplaceFrontend => {
            cluster.replace_frontend()?;
        }
    }
    Ok(())
}

/// The verdict over the whole history.
fn judge(cluster: &Cluster, report: &Report, schedule: &Schedule, calm_from: Instant) -> Result<Accounting> {
    let accounting = report.account(0, &cluster.user_agents()?);
    anyhow::ensure!(accounting.keeps_the_promises(), "a promise broken: {accounting}");
    let unknown = accounting.unknown + accounting.unanswered;
    let bound = schedule.steps.len() * CLIENTS;
    anyhow::ensure!(
        unknown <= bound,
        "{unknown} outcomes unknown, more than {CLIENTS} per fault ({bound}): {accounting}"
    );
    let recovered_by = calm_from + CALM - Duration::from_secs(1);
    only_200_from(report, 0, recovered_by).with_context(|| {
        format!(
            "visits did not all succeed {:?} after the last fault",
            CALM - Duration::from_secs(1)
        )
    })?;
    Ok(accounting)
}

/// The seeds to run: `FAULT_SEEDS` as `7`, `1,5,9` or `1..=100`, else `default`.
pub fn seeds(default: &[u64]) -> Result<Vec<u64>> {
    let Ok(text) = std::env::var("FAULT_SEEDS") else {
        return Ok(default.to_vec());
    };
    if let Some((first, last)) = text.split_once("..=") {
        let (first, last): (u64, u64) = (first.trim().parse()?, last.trim().parse()?);
        return Ok((first..=last).collect());
    }
    text.split(',')
        .map(|seed| {
            seed.trim()
                .parse()
                .with_context(|| format!("FAULT_SEEDS: {seed:?} is not a seed"))
        })
        .collect()
}
