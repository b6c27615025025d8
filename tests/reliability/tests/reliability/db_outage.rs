//! Database outage under load: PostgreSQL stops for 10 s while 256 clients record visits.
//! During it only 503 problem+json, answered in bounded time; after it, success again within
//! 2 s without restarting the service; and still exactly one row per 200.

use std::time::{Duration, Instant};

use reliability_tests::{
    CONNECTIONS, Load, LoadSpec, Stack, Target, assert_only_200_or_503_problem, long_form, one_at_a_time,
};

/// `DB_ACQUIRE_TIMEOUT` for this suite. Recovery after the outage is bounded by the pool's
/// reconnect backoff, which r2d2 caps at half this timeout: with the default 3 s that is 1.5 s
/// plus the connection itself, measured at up to 2.09 s under this load (1 run in 7), past the
/// 2 s the issue asks for. 2 s caps the backoff at 1 s.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
const OUTAGE: Duration = Duration::from_secs(10);

#[test]
fn a_database_outage_under_load_answers_503_and_recovers_within_2_s_without_restart() {
    let _serial = one_at_a_time();
    let mut stack = Stack::start(&[("DB_ACQUIRE_TIMEOUT", "2s")]).expect("PostgreSQL and the frontend start");
    let (before, after) = if long_form() {
        (Duration::from_secs(25), Duration::from_secs(25))
    } else {
        (Duration::from_secs(3), Duration::from_secs(5))
    };

    let load = Load::start(LoadSpec::new(
        stack.addr(),
        vec![Target::visits(CONNECTIONS), Target::health(8)],
        before + OUTAGE + after,
    ))
    .expect("load starts");
    std::thread::sleep(before);
    stack.pg.stop().expect("PostgreSQL stops");
    let down = Instant::now();
    std::thread::sleep(OUTAGE);
    let restarting = Instant::now();
    stack.pg.restart().expect("PostgreSQL starts again");
    let up = Instant::now();
    let report = load.finish().expect("load finishes");
    println!(
        "db outage: stopped {:?} after start, down for {:?}\n{}",
        down.duration_since(report.started),
        up.duration_since(down),
        report.summary()
    );

    assert_only_200_or_503_problem(&report, 0);

    // While the database was down, nothing could be committed: no 200 for a request that
    // both started and ended inside the outage.
    let during: Vec<_> = report
        .of(0)
        .filter(|record| record.start >= down && record.end <= restarting)
        .collect();
    assert!(!during.is_empty(), "no request was answered during the outage");
    let false_successes = during
        .iter()
        .filter(|record| record.status() == Some(200))
        .count();
    assert_eq!(false_successes, 0, "200s while the database was down");

    // Bounded: a request waits at most for the batch in front of it and its own, each
    // limited by the acquire timeout; 2 s of margin for scheduling on a busy machine.
    // The exception is a batch whose COMMIT the stop cut off: it may or may not have committed,
    // so the service asks the database once it is back (for up to DB_CONNECT_TIMEOUT, 20 s)
    // and answers with the truth. The service logs each such batch with its size; only that
    // many answers may take longer, and still within that limit.
    let bound = ACQUIRE_TIMEOUT * 2 + Duration::from_secs(2);
    let awaiting_commit_outcome: usize = stack
        .frontend
        .logs()
        .lines()
        .filter(|line| line.contains("COMMIT unanswered"))
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|entry| entry["visits"].as_u64())
        .sum::<u64>() as usize;
    let slow: Vec<Duration> = report
        .of(0)
        .map(|record| record.latency())
        .filter(|latency| *latency > bound)
        .collect();
    assert!(
        slow.len() <= awaiting_commit_outcome,
        "{} answers took longer than {bound:?} (slowest {:?}); only {awaiting_commit_outcome} visits \
         waited for the outcome of a cut-off COMMIT",
        slow.len(),
        slow.iter().max()
    );
    let commit_outcome_bound = Duration::from_secs(20) + Duration::from_secs(2);
    assert!(
        slow.iter().all(|latency| *latency <= commit_outcome_bound),
        "an answer waited past DB_CONNECT_TIMEOUT: {:?}",
        slow.iter().max()
    );

    // Recovery without a restart: success within 2 s of the database accepting connections,
    // and from then on nothing but success.
    let first_success = report
        .of(0)
        .filter(|record| record.status() == Some(200) && record.end > up)
        .map(|record| record.end)
        .min()
        .expect("a 200 after the database came back");
    let recovery = first_success.duration_since(up);
    assert!(
        recovery <= Duration::from_secs(2),
        "first success {recovery:?} after PostgreSQL accepted connections again"
    );
    let settled = up + Duration::from_secs(3);
    let late_failures = report
        .of(0)
        .filter(|record| record.start >= settled && record.status() != Some(200))
        .count();
    assert_eq!(late_failures, 0, "failures 3 s after the database came back");

    // /health never depended on the database.
    assert_eq!(
        report.other_than(1, &[200]).len(),
        0,
        "/health failed during the outage"
    );

    let ok = report.count_status(0, 200);
    let accounting = report.account(0, &stack.user_agents().expect("visits read"));
    let rows = accounting.rows;
    if !accounting.is_exact() {
        // What the service said about its database around the outage, for whoever debugs this.
        let logs = stack.frontend.logs();
        let notes: Vec<&str> = logs
            .lines()
            .filter(|line| !line.contains("\"message\":\"request\""))
            .collect();
        eprintln!(
            "frontend's own log lines ({}):\n{}",
            notes.len(),
            notes[..notes.len().min(200)].join("\n")
        );
    }
    assert!(accounting.is_exact(), "across the outage: {accounting}");
    println!(
        "db outage: {} answers 503 during a {OUTAGE:?} outage, recovered {recovery:?} after restart, \
         {ok} answers 200 = {rows} rows",
        report.count_status(0, 503)
    );
}
