//! Credentials from Secrets Manager (moto on loopback), as on App Runner with DBSECRETSNAME.

use std::time::Duration;

use harness::{Moto, Postgres, Service, binary};
use serde_json::json;
use system_tests::{APP_USER, assert_no_secret_in_logs, get, get_until, sentinel_password};

struct SecretsSystem {
    postgres: Postgres,
    database: String,
    moto: Moto,
}

impl SecretsSystem {
    fn start(password: &str) -> Self {
        let postgres = Postgres::start().expect("PostgreSQL");
        postgres.create_role(APP_USER, password).expect("role");
        let database = postgres.create_database_with_owner(APP_USER).expect("database");
        let moto = Moto::start().expect("moto");
        Self {
            postgres,
            database,
            moto,
        }
    }

    /// `frontend` with DBSECRETSNAME=`secret_id`, the moto environment and `extra`.
    fn frontend(&self, secret_id: &str, extra: &[(&str, String)]) -> Service {
        let mut env = self.moto.aws_env();
        env.push(("DBSECRETSNAME".into(), secret_id.into()));
        env.push(("DB_SSLMODE".into(), "disable".into()));
        env.extend(
            extra
                .iter()
                .map(|(name, value)| (name.to_string(), value.clone())),
        );
        Service::spawn(binary("frontend").expect("frontend"), env).expect("start frontend")
    }

    fn env_location(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DB_HOST", self.postgres.host().to_string()),
            ("DB_PORT", self.postgres.port().to_string()),
            ("DB_NAME", self.database.clone()),
        ]
    }
}

fn stop(frontend: &mut Service) {
    frontend.sigterm().expect("SIGTERM");
    let status = frontend.wait_exit(Duration::from_secs(15)).expect("exit");
    assert!(status.success(), "exit status {status}");
}

#[test]
fn an_rds_managed_secret_is_used_and_a_rotation_needs_no_restart() {
    let first = sentinel_password("rotation-first");
    let second = sentinel_password("rotation-second");
    let system = SecretsSystem::start(&first);
    let arn = system
        .moto
        .create_secret(
            "rds!cluster-demo",
            &json!({"username": APP_USER, "password": first}).to_string(),
        )
        .expect("secret");
    // A pool of two, so the ended sessions below are all the pool has.
    let mut env = system.env_location();
    env.push(("DB_POOL_SIZE", "2".to_string()));
    env.push(("DB_WRITERS", "1".to_string()));
    let mut frontend = system.frontend(&arn, &env);

    let answer = get(&frontend.url("/"), Some("before rotation"));
    assert_eq!(answer.status, 200, "{}", answer.body);

    // Rotation as RDS does it: new password in the database and in the secret; sessions that
    // are already open stay valid, so end them to make the frontend log in again.
    system
        .postgres
        .set_password(APP_USER, &second)
        .expect("rotate the password");
    system
        .moto
        .put_secret_value(
            &arn,
            &json!({"username": APP_USER, "password": second}).to_string(),
        )
        .expect("rotate the secret");
    system
        .postgres
        .with_admin_client("postgres", |client| {
            client.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
                &[&APP_USER],
            )?;
            Ok(())
        })
        .expect("end the app's sessions");

    let (answer, failures) = get_until(&frontend.url("/"), Duration::from_secs(10), |answer| {
        answer.status == 200
    });
    assert_eq!(answer.status, 200, "no recovery after rotation: {}", answer.body);
    // Neither the rotation nor the ended sessions may cost a request: a session the server
    // ended is retried on a new connection, and the rejected password re-reads the secret.
    assert_eq!(failures, 0, "requests failed after the rotation");
    let recent = get(&frontend.url("/recent-visits"), Some("after rotation"));
    assert_eq!(recent.status, 200, "{}", recent.body);
    assert_eq!(recent.json()["Response"][0]["user_agent"], "system-tests/retry");
    assert_eq!(frontend.try_exit_status().expect("status"), None, "it restarted");

    stop(&mut frontend);
    assert_no_secret_in_logs(&[&frontend], &[&first, &second]);
}

#[test]
fn a_cdk_style_secret_also_says_where_the_database_is() {
    let password = sentinel_password("cdk");
    let system = SecretsSystem::start(&password);
    let secret = json!({
        "username": APP_USER,
        "password": password,
        "engine": "postgres",
        "host": system.postgres.host(),
        "port": system.postgres.port(),
        "dbname": system.database,
    });
    let arn = system
        .moto
        .create_secret("demo/aurora-credentials", &secret.to_string())
        .expect("secret");
    // No DB_HOST, DB_PORT or DB_NAME: the secret fills them in.
    let mut frontend = system.frontend(&arn, &[]);

    let answer = get(&frontend.url("/"), Some("cdk secret"));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let recent = get(&frontend.url("/recent-visits"), Some("cdk secret"));
    assert_eq!(recent.json()["Response"][0]["user_agent"], "cdk secret");
    let connection = get(&frontend.url("/test-connection"), Some("cdk secret"));
    assert_eq!(connection.status, 200, "{}", connection.body);
    assert!(
        connection.body.contains(&system.postgres.port().to_string()),
        "{}",
        connection.body
    );

    stop(&mut frontend);
    assert_no_secret_in_logs(&[&frontend], &[&password]);
}

#[test]
fn an_unknown_secret_gives_503_problems_not_a_crash() {
    let password = sentinel_password("unknown-secret");
    let system = SecretsSystem::start(&password);
    let missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:does-not-exist-AbCdEf";
    let mut frontend = system.frontend(missing, &system.env_location());

    let started = std::time::Instant::now();
    let answer = get(&frontend.url("/"), Some("system-tests"));
    answer.assert_problem(503);
    // Bounded by DB_ACQUIRE_TIMEOUT (3 s by default), not by the SDK's retries.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(get(&frontend.url("/health"), None).status, 200);
    assert_eq!(frontend.try_exit_status().expect("status"), None);

    stop(&mut frontend);
    assert_no_secret_in_logs(&[&frontend], &[&password]);
}
