//! Breaking a dependency of the running system, and what a user sees then.

use std::time::{Duration, Instant};

use harness::{HttpStub, Reply, Service, binary};
use serde_json::json;
use system_tests::{APP_USER, TestSystem, assert_no_secret_in_logs, client, frontend_env, get, get_until};

#[test]
fn a_database_outage_gives_503_problems_and_heals_without_a_restart() {
    let mut system = TestSystem::spawn();
    assert_eq!(system.visit("/", "before the outage").status, 200);
    let frontend_pid = system.frontend.pid();

    system.postgres.stop().expect("stop PostgreSQL");
    for path in ["/", "/recent-visits"] {
        let started = Instant::now();
        let answer = system.visit(path, "during the outage");
        let detail = answer.assert_problem(503);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{path} took {:?}",
            started.elapsed()
        );
        // Written for the user: no driver error text, no address.
        assert!(!detail.to_lowercase().contains("refused"), "{detail}");
        assert!(!detail.contains("127.0.0.1"), "{detail}");
    }
    system
        .visit("/test-connection", "during the outage")
        .assert_problem(503);
    // Liveness does not follow the database: the platform must not replace this process.
    assert_eq!(system.visit("/health", "probe").status, 200);

    system.postgres.restart().expect("restart PostgreSQL");
    let (answer, failures) = get_until(&system.frontend.url("/"), Duration::from_secs(20), |answer| {
        answer.status == 200
    });
    assert_eq!(answer.status, 200, "no recovery within 20 s: {}", answer.body);
    assert!(
        failures <= 2,
        "{failures} requests failed after the database came back"
    );
    assert_eq!(system.visit("/recent-visits", "after the outage").status, 200);
    assert_eq!(system.frontend.try_exit_status().expect("status"), None);
    assert_eq!(system.frontend.pid(), frontend_pid);

    // Every 200 is a stored row and nothing else is: no false success, nothing lost.
    assert_eq!(system.stored_visit_count(), 2);

    system.stop_and_assert_no_secret_in_logs();
}

#[test]
fn a_dead_private_service_gives_a_502_problem() {
    let mut system = TestSystem::spawn();
    assert_eq!(system.visit("/ecs-private-service", "system-tests").status, 200);

    system.private_service.kill().expect("kill private-service");
    let started = Instant::now();
    let detail = system
        .visit("/ecs-private-service", "system-tests")
        .assert_problem(502);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!detail.contains("127.0.0.1"), "{detail}");
    // The rest of the API does not depend on it.
    assert_eq!(system.visit("/", "system-tests").status, 200);

    system.stop_and_assert_no_secret_in_logs();
}

#[test]
fn a_rejected_database_password_gives_503_and_stays_out_of_the_logs() {
    let system = TestSystem::spawn();
    assert_eq!(system.visit("/", "system-tests").status, 200);

    // Someone changes the password behind the frontend's back (no secret to re-read here)
    // and its sessions end, so the next connection must log in again.
    let changed = system_tests::sentinel_password("changed");
    system
        .postgres
        .set_password(APP_USER, &changed)
        .expect("set password");
    terminate_sessions(&system, APP_USER);

    let (answer, _) = get_until(&system.frontend.url("/"), Duration::from_secs(10), |answer| {
        answer.status == 503
    });
    answer.assert_problem(503);
    assert_eq!(system.visit("/health", "probe").status, 200);

    system.stop_and_assert_no_secret_in_logs();
}

#[test]
fn sigterm_lets_requests_in_flight_finish_then_exits_zero() {
    // A private service that takes 1.5 s keeps a request in flight during the shutdown.
    let slow = HttpStub::start(Reply::JsonAfter(
        Duration::from_millis(1500),
        200,
        json!({"TaskArn": "in-flight"}),
    ))
    .expect("slow stub");
    let pg = harness::Postgres::start().expect("PostgreSQL");
    let db = pg.create_database().expect("database");
    let mut frontend = Service::spawn(
        binary("frontend").expect("frontend"),
        frontend_env(&pg, &db, pg.superuser_password(), &slow.url())
            .into_iter()
            .map(|(name, value)| {
                if name == "DB_USER" {
                    (name, "postgres".to_string())
                } else {
                    (name, value)
                }
            }),
    )
    .expect("start frontend");

    let url = frontend.url("/ecs-private-service");
    let in_flight = std::thread::spawn(move || get(&url, Some("in flight")));
    while slow.requests() == 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let signalled = Instant::now();
    frontend.sigterm().expect("SIGTERM");

    // It stops accepting new connections at once ...
    let refused = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        client(Duration::from_millis(200))
            .get(frontend.url("/health"))
            .call()
            .is_err()
    });
    assert!(refused, "still accepting connections 1 s after SIGTERM");

    // ... finishes the request it had ...
    let answer = in_flight.join().expect("in-flight request");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json(), json!({"Response": {"TaskArn": "in-flight"}}));

    // ... and exits 0.
    let status = frontend.wait_exit(Duration::from_secs(10)).expect("exit");
    assert!(status.success(), "exit status {status}");
    assert!(
        signalled.elapsed() >= Duration::from_millis(1000),
        "exited before the request finished"
    );
    assert_no_secret_in_logs(&[&frontend], &[pg.superuser_password()]);
}

/// Ends the sessions of `user`, as a failover or an idle timeout would.
pub fn terminate_sessions(system: &TestSystem, user: &str) {
    system
        .postgres
        .with_admin_client("postgres", |client| {
            client.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
                &[&user],
            )?;
            Ok(())
        })
        .expect("terminate sessions");
}
