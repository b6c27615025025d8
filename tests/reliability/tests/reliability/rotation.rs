//! Secret rotation under load: the database password changes (a real `ALTER ROLE`), the secret
//! in Secrets Manager (moto) gets the new value, and every session the frontend holds is ended,
//! so its pool must open new connections — which the old password no longer opens. The service
//! re-reads the secret by itself: at most one failed request per pool connection, no restart,
//! and neither password in any response or log line.

use std::time::{Duration, Instant};

use harness::{Moto, Postgres};
use reliability_tests::stack::{addr_of, frontend_sessions, terminate_frontend_sessions, user_agents};
use reliability_tests::{
    CONNECTIONS, Load, LoadSpec, Outcome, Target, assert_rotation_cost, long_form, one_at_a_time,
};

const POOL_SIZE: usize = 4;

#[test]
fn rotating_the_password_under_load_costs_at_most_one_request_per_pool_connection() {
    let _serial = one_at_a_time();
    let old_password = "rotation-old-3b1f9c2e7d";
    let new_password = "rotation-new-8a4d6e0f5c";
    let pg = Postgres::start().expect("PostgreSQL starts");
    pg.create_role("app", old_password).expect("role created");
    let db = pg.create_database_with_owner("app").expect("database created");
    let moto = Moto::start().expect("moto starts");
    let secret = serde_json::json!({"username": "app", "password": old_password}).to_string();
    let secret_id = moto
        .create_secret("reliability/rotation", &secret)
        .expect("secret created");

    let mut frontend = harness::ServiceCommand::new(harness::binary("frontend").expect("frontend binary"))
        .envs(moto.aws_env())
        .envs([
            ("DBSECRETSNAME", secret_id.clone()),
            ("DB_HOST", pg.host().to_owned()),
            ("DB_PORT", pg.port().to_string()),
            ("DB_NAME", db.clone()),
            ("DB_POOL_SIZE", POOL_SIZE.to_string()),
            ("DB_WRITERS", "2".to_owned()),
        ])
        .spawn()
        .expect("frontend starts");
    let pid = frontend.pid();

    let (before, after) = if long_form() {
        (Duration::from_secs(20), Duration::from_secs(40))
    } else {
        (Duration::from_secs(3), Duration::from_secs(6))
    };
    let mut spec = LoadSpec::new(
        addr_of(&frontend),
        vec![Target::visits(CONNECTIONS), Target::new("/recent-visits", 8)],
        before + after,
    );
    spec.forbidden = vec![old_password.to_owned(), new_password.to_owned()];
    let load = Load::start(spec).expect("load starts");
    std::thread::sleep(before);

    // The rotation, in the order Secrets Manager's rotation function does it, then every
    // session of the frontend ended so that new connections (with credentials) are needed.
    pg.set_password("app", new_password).expect("password changed");
    moto.put_secret_value(
        &secret_id,
        &serde_json::json!({"username": "app", "password": new_password}).to_string(),
    )
    .expect("secret updated");
    let ended = terminate_frontend_sessions(&pg, &db).expect("sessions ended");
    let rotated = Instant::now();
    let report = load.finish().expect("load finishes");
    println!("rotation: ended {ended} sessions\n{}", report.summary());
    assert!(
        ended > 0,
        "the frontend held no session to end: the rotation was not exercised"
    );

    // New sessions, opened after the old password stopped working, carry the traffic.
    let failed = assert_rotation_cost(&report, POOL_SIZE, rotated, "");
    assert!(
        report
            .records
            .iter()
            .all(|record| !matches!(record.outcome, Outcome::Response { forbidden: true, .. })),
        "a response contained a database password"
    );

    let sessions = frontend_sessions(&pg, &db).expect("sessions counted");
    assert!(
        (1..=POOL_SIZE as i64).contains(&sessions),
        "{sessions} frontend sessions after the rotation"
    );

    // No restart: the same process, still running, and nothing secret in what it wrote.
    assert_eq!(frontend.pid(), pid);
    assert!(
        frontend.try_exit_status().expect("status").is_none(),
        "the frontend exited"
    );
    let logs = frontend.logs();
    for password in [old_password, new_password] {
        assert!(
            !logs.contains(password),
            "a password appears in the frontend's log"
        );
    }

    let ok = report.count_status(0, 200);
    let accounting = report.account(0, &user_agents(&pg, &db).expect("visits read"));
    assert!(accounting.is_exact(), "across the rotation: {accounting}");
    let rows = accounting.rows;
    println!(
        "rotation: {ended} sessions ended, {} failed requests (limit {POOL_SIZE}), {ok} answers 200 = {rows} rows",
        failed
    );
}
