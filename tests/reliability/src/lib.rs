//! Tools for the reliability suites: a load driver that keeps every answer, the frontend over a
//! throwaway PostgreSQL, and raw HTTP for inputs a well-behaved client would never send.
//!
//! The suites themselves are in `tests/reliability/`; the README fragment says how to run them.

pub mod aurora;
pub mod faults;
pub mod load;
pub mod raw;
pub mod stack;

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

pub use load::{Accounting, Load, LoadSpec, OUTCOME_UNKNOWN_TYPE, Outcome, Record, Report, Target};
pub use stack::Stack;

/// `RELIABILITY_LONG=1` selects the long forms (60 s loads instead of 10 s, more examples).
pub fn long_form() -> bool {
    std::env::var("RELIABILITY_LONG").is_ok_and(|value| value == "1")
}

/// How long a steady load lasts: 60 s in the long form, 10 s otherwise (the CI form).
pub fn load_duration() -> Duration {
    if long_form() {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(10)
    }
}

/// The concurrency the issue asks for.
pub const CONNECTIONS: usize = 256;

/// Suites run one at a time: two loads on two cores would measure each other, not the service.
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What ending every pooled session (a password rotation) may cost a steady load on `GET /`: at
/// most one request per pool connection, each a 503 problem+json, and visits succeeding again a
/// second after `ended_at`. Panics naming the first failures (and `context`, e.g. logs); returns
/// how many requests failed.
pub fn assert_rotation_cost(report: &Report, pool_size: usize, ended_at: Instant, context: &str) -> usize {
    let failures: Vec<&Record> = report
        .records
        .iter()
        .filter(|record| record.status() != Some(200))
        .collect();
    assert!(
        failures.len() <= pool_size,
        "{} requests failed across the rotation (at most one per pool connection, {pool_size}), e.g. {:?}\n{context}",
        failures.len(),
        &failures[..failures.len().min(5)],
    );
    assert!(
        failures.iter().all(|record| matches!(
            record.outcome,
            Outcome::Response {
                status: 503,
                problem: true,
                ..
            }
        )),
        "a failure other than 503 problem+json: {failures:?}"
    );
    let later = report
        .of(0)
        .filter(|record| record.start > ended_at + Duration::from_secs(1) && record.status() == Some(200))
        .count();
    assert!(later > 0, "no visit succeeded after the rotation");
    failures.len()
}

/// Every answer of target `index` is a 200 with the expected body or a 503 problem+json: never a
/// hang, a reset or another status. Panics naming the first others.
pub fn assert_only_200_or_503_problem(report: &Report, index: usize) {
    let unexpected: Vec<&Record> = report
        .of(index)
        .filter(|record| match record.outcome {
            Outcome::Response {
                status: 200, body_ok, ..
            } => !body_ok,
            Outcome::Response {
                status: 503, problem, ..
            } => !problem,
            _ => true,
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "{} answers to {} were neither 200 nor 503 problem+json, e.g. {:?}",
        unexpected.len(),
        report.spec.targets[index].path,
        &unexpected[..unexpected.len().min(5)]
    );
}

/// Every request of target `index` that started at or after `from` was answered 200, and some
/// did (the load lasted long enough to show it). Panics naming the first others, with `context`.
pub fn assert_only_200_from(report: &Report, index: usize, from: Instant, context: &str) {
    if let Err(error) = only_200_from(report, index, from) {
        panic!("{error}\n{context}");
    }
}

/// [`assert_only_200_from`], as a result.
pub fn only_200_from(report: &Report, index: usize, from: Instant) -> anyhow::Result<()> {
    let failed: Vec<&Record> = report
        .of(index)
        .filter(|record| record.start >= from && record.status() != Some(200))
        .collect();
    anyhow::ensure!(
        failed.is_empty(),
        "{} requests failed from +{:?} on, e.g. {:?}",
        failed.len(),
        from.saturating_duration_since(report.started),
        &failed[..failed.len().min(5)]
    );
    anyhow::ensure!(
        report.of(index).any(|record| record.start >= from),
        "the load ended before +{:?}: nothing shows what came after",
        from.saturating_duration_since(report.started)
    );
    Ok(())
}

/// The events of a service's JSON log lines whose `message` is `message`.
pub fn log_events(logs: &str, message: &str) -> Vec<serde_json::Value> {
    logs.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["message"] == message)
        .collect()
}
