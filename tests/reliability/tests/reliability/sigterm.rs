//! SIGTERM under load: requests in flight complete, new connections are refused (not reset,
//! not answered 5xx), the process exits 0, and every 200 is still exactly one row.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use harness::{HttpStub, Reply};
use reliability_tests::{CONNECTIONS, Load, LoadSpec, Outcome, Stack, Target, long_form, one_at_a_time};

/// The private service answers after this: its requests are the slow ones in flight at SIGTERM.
const SLOW_UPSTREAM: Duration = Duration::from_millis(1500);

#[test]
fn sigterm_under_load_finishes_in_flight_requests_refuses_new_ones_and_exits_0() {
    let _serial = one_at_a_time();
    let slow = HttpStub::start(Reply::JsonAfter(
        SLOW_UPSTREAM,
        200,
        serde_json::json!({"Slow": true}),
    ))
    .expect("slow private service");
    let url = slow.url();
    let mut stack = Stack::start(&[
        ("ECSPRIVATESERVICE", url.as_str()),
        ("ECSPRIVATESERVICE_TIMEOUT", "5s"),
    ])
    .expect("PostgreSQL and the frontend start");
    let before = if long_form() {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(4)
    };
    let load = Load::start(LoadSpec::new(
        stack.addr(),
        vec![
            Target::visits(CONNECTIONS),
            Target::new("/ecs-private-service", 8),
        ],
        before + Duration::from_secs(3),
    ))
    .expect("load starts");
    std::thread::sleep(before);

    let signalled = Instant::now();
    stack.frontend.sigterm().expect("SIGTERM sent");
    // While the slow requests drain, the process is alive and a new connection is refused.
    std::thread::sleep(Duration::from_millis(300));
    let refused_while_draining = TcpStream::connect_timeout(&stack.addr(), Duration::from_secs(2))
        .is_err_and(|error| error.kind() == std::io::ErrorKind::ConnectionRefused);
    let alive_while_draining = stack.frontend.try_exit_status().expect("status").is_none();
    let status = stack
        .frontend
        .wait_exit(Duration::from_secs(25))
        .expect("the frontend exits");
    let exited = Instant::now();
    let report = load.finish().expect("load finishes");
    println!(
        "sigterm: exited {:?} after the signal with {status}\n{}",
        exited.duration_since(signalled),
        report.summary()
    );

    assert!(status.success(), "exit status {status}");
    assert!(
        alive_while_draining,
        "the frontend did not wait for its slow requests"
    );
    assert!(
        refused_while_draining,
        "a new connection was not refused while draining"
    );

    // Requests sent well before the signal all completed with 200.
    let settle = Duration::from_millis(100);
    let unfinished: Vec<_> = report
        .records
        .iter()
        .filter(|record| record.start + settle < signalled && record.status() != Some(200))
        .collect();
    assert!(
        unfinished.is_empty(),
        "{} requests sent before SIGTERM did not complete with 200, e.g. {:?}",
        unfinished.len(),
        &unfinished[..unfinished.len().min(5)]
    );
    let in_flight = |target| {
        report
            .of(target)
            .filter(|record| {
                record.start < signalled && record.end > signalled && record.status() == Some(200)
            })
            .count()
    };
    assert!(in_flight(0) > 0, "no visit was in flight at SIGTERM");
    assert!(in_flight(1) > 0, "no slow request was in flight at SIGTERM");

    // Afterwards: refused or closed before an answer, never an error status or a hang.
    let unclean: Vec<_> = report
        .records
        .iter()
        .filter(|record| match &record.outcome {
            Outcome::Response { status, .. } => *status != 200,
            Outcome::Refused | Outcome::Closed => false,
            Outcome::Timeout | Outcome::Error(_) => true,
        })
        .collect();
    assert!(unclean.is_empty(), "unclean answers around SIGTERM: {unclean:?}");
    assert!(
        report
            .records
            .iter()
            .any(|record| record.outcome == Outcome::Refused),
        "no request was refused after the frontend stopped"
    );

    let ok = report.count_status(0, 200);
    let accounting = report.account(0, &stack.user_agents().expect("visits read"));
    assert!(accounting.is_exact(), "across SIGTERM: {accounting}");
    let rows = accounting.rows;
    println!(
        "sigterm: {} visits and {} slow requests in flight completed, {ok} answers 200 = {rows} rows, exit 0",
        in_flight(0),
        in_flight(1)
    );
}
