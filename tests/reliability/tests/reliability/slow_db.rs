//! Slow database: a held lock blocks every statement on the visits table for longer than the
//! statement timeout. Requests get 503 within the timeout, `/health` does not notice, and the
//! pool neither leaks nor grows connections.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use reliability_tests::stack::frontend_sessions;
use reliability_tests::{
    Load, LoadSpec, Report, Stack, Target, assert_only_200_or_503_problem, one_at_a_time,
};

const STATEMENT_TIMEOUT: Duration = Duration::from_secs(1);
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
const POOL_SIZE: i64 = 4;
const LOCK_HELD: Duration = Duration::from_secs(4);

#[test]
fn statements_blocked_past_the_statement_timeout_answer_503_without_leaking_connections() {
    let _serial = one_at_a_time();
    let stack = Stack::start(&[
        ("DB_STATEMENT_TIMEOUT", "1s"),
        ("DB_ACQUIRE_TIMEOUT", "2s"),
        ("DB_POOL_SIZE", "4"),
        ("DB_WRITERS", "2"),
    ])
    .expect("PostgreSQL and the frontend start");
    let before = Duration::from_secs(2);
    let after = Duration::from_secs(3);
    let load = Load::start(LoadSpec::new(
        stack.addr(),
        vec![
            Target::visits(128),
            Target::new("/recent-visits", 16),
            Target::health(16),
        ],
        before + LOCK_HELD + after,
    ))
    .expect("load starts");
    std::thread::sleep(before);

    // An operator's long transaction: ACCESS EXCLUSIVE blocks inserts and reads alike.
    let (locked_tx, locked_rx) = mpsc::channel();
    let (pg, db) = (&stack.pg, stack.db.as_str());
    let (locked_at, released_at, sessions_while_locked) = std::thread::scope(|scope| {
        let holder = scope.spawn(move || {
            pg.with_admin_client(db, |client| {
                let mut transaction = client.transaction()?;
                transaction.batch_execute("LOCK TABLE access IN ACCESS EXCLUSIVE MODE")?;
                let _ = locked_tx.send(Instant::now());
                std::thread::sleep(LOCK_HELD);
                transaction.commit()?;
                Ok(Instant::now())
            })
        });
        let locked_at = locked_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("lock taken");
        std::thread::sleep(LOCK_HELD / 2);
        let sessions = frontend_sessions(pg, db).expect("sessions counted");
        let released_at = holder
            .join()
            .expect("lock holder")
            .expect("lock held and released");
        (locked_at, released_at, sessions)
    });
    let report = load.finish().expect("load finishes");
    println!(
        "slow db: lock held {:?}\n{}",
        released_at.duration_since(locked_at),
        report.summary()
    );

    for target in [0, 1] {
        assert_only_200_or_503_problem(&report, target);
    }
    let timed_out = |target| {
        report
            .of(target)
            .filter(|record| record.start >= locked_at && record.end <= released_at)
            .filter(|record| record.status() == Some(503))
            .count()
    };
    assert!(
        timed_out(0) > 0,
        "no visit was refused while the table was locked"
    );
    assert!(timed_out(1) > 0, "no read was refused while the table was locked");

    // Within the timeout: a visit waits for at most the blocked batch ahead of it and its own;
    // a read waits for a connection (acquire timeout) or its own statement. 2 s of margin.
    let bound = STATEMENT_TIMEOUT * 2 + ACQUIRE_TIMEOUT + Duration::from_secs(2);
    for target in [0, 1] {
        let slowest = Report::percentile(report.of(target), 100.0);
        assert!(
            slowest <= bound,
            "{} took {slowest:?} (bound {bound:?})",
            report.spec.targets[target].path
        );
    }

    // /health does not touch the database: all 200, and quick while the lock is held.
    assert_eq!(report.other_than(2, &[200]).len(), 0, "/health failed");
    let health_p99 = Report::percentile(
        report
            .of(2)
            .filter(|record| record.start >= locked_at && record.end <= released_at),
        99.0,
    );
    assert!(
        health_p99 < STATEMENT_TIMEOUT / 2,
        "/health p99 {health_p99:?} while the table was locked"
    );

    // After the lock: success again, no leaked or extra connections.
    let recovered = report
        .of(0)
        .any(|record| record.start >= released_at + Duration::from_secs(1) && record.status() == Some(200));
    assert!(recovered, "no visit succeeded after the lock was released");
    let sessions_after = frontend_sessions(&stack.pg, &stack.db).expect("sessions counted");
    assert!(
        sessions_while_locked <= POOL_SIZE && sessions_after <= POOL_SIZE,
        "frontend sessions: {sessions_while_locked} while locked, {sessions_after} after (pool size {POOL_SIZE})"
    );

    let ok = report.count_status(0, 200);
    let accounting = report.account(0, &stack.user_agents().expect("visits read"));
    assert!(accounting.is_exact(), "around the lock: {accounting}");
    let rows = accounting.rows;
    println!(
        "slow db: {} visits and {} reads refused within {bound:?}, /health p99 {health_p99:?}, \
         sessions {sessions_while_locked}/{sessions_after} <= {POOL_SIZE}, {ok} answers 200 = {rows} rows",
        report.count_status(0, 503),
        report.count_status(1, 503)
    );
}
