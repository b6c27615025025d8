//! Credentials from Secrets Manager (a real moto server) against a real PostgreSQL, with the
//! frontend as a process configured the way App Runner configures it.

use harness::{Moto, Postgres, Service};
use serde_json::{Value, json};

const ROLE: &str = "app";
const FIRST_PASSWORD: &str = "sentinel-first-3Kq9";
const ROTATED_PASSWORD: &str = "sentinel-rotated-7Zp2";

/// A database owned by a password-authenticated role, and a moto holding nothing yet.
struct World {
    pg: Postgres,
    db: String,
    moto: Moto,
}

impl World {
    fn new() -> Self {
        let pg = Postgres::start().expect("PostgreSQL starts");
        pg.create_role(ROLE, FIRST_PASSWORD).expect("role");
        let db = pg.create_database_with_owner(ROLE).expect("database");
        let moto = Moto::start().expect("moto starts");
        Self { pg, db, moto }
    }

    fn frontend(&self, env: &[(&str, String)]) -> Service {
        self.frontend_with_aws_env(self.moto.aws_env(), env)
    }

    fn frontend_with_aws_env(&self, mut all: Vec<(String, String)>, env: &[(&str, String)]) -> Service {
        all.extend(
            env.iter()
                .map(|(name, value)| ((*name).to_owned(), value.clone())),
        );
        Service::spawn(harness::binary("frontend").expect("frontend binary"), all).expect("frontend starts")
    }

    fn endpoint_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DB_HOST", self.pg.host().to_owned()),
            ("DB_PORT", self.pg.port().to_string()),
            ("DB_NAME", self.db.clone()),
        ]
    }
}

fn get(service: &Service, path: &str) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent.get(service.url(path)).call().expect("HTTP answer");
    let status = response.status().as_u16();
    let body = response.body_mut().read_json::<Value>().unwrap_or(Value::Null);
    (status, body)
}

fn assert_no_password_anywhere(service: &Service, bodies: &[Value]) {
    let logs = service.logs();
    for password in [FIRST_PASSWORD, ROTATED_PASSWORD] {
        assert!(!logs.contains(password), "a password reached the logs");
        assert!(
            bodies.iter().all(|body| !body.to_string().contains(password)),
            "a password reached a response"
        );
    }
}

#[test]
fn an_rds_managed_secret_supplies_the_credentials() {
    let world = World::new();
    let arn = world
        .moto
        .create_secret(
            "rds!cluster-demo",
            &json!({"username": ROLE, "password": FIRST_PASSWORD}).to_string(),
        )
        .expect("secret");
    let mut env = world.endpoint_env();
    env.push(("DBSECRETSNAME", arn));
    let frontend = world.frontend(&env);

    let (status, registered) = get(&frontend, "/");
    assert_eq!(status, 200, "{registered}");
    let (status, recent) = get(&frontend, "/recent-visits");
    assert_eq!(status, 200);
    assert_eq!(recent["Response"].as_array().map(Vec::len), Some(1));
    assert_no_password_anywhere(&frontend, &[registered, recent]);
}

#[test]
fn without_a_configured_region_the_secret_arn_supplies_it() {
    let world = World::new();
    let arn = world
        .moto
        .create_secret(
            "rds!cluster-regionless",
            &json!({"username": ROLE, "password": FIRST_PASSWORD}).to_string(),
        )
        .expect("secret");
    assert!(arn.starts_with("arn:aws:secretsmanager:us-east-1:"), "{arn}");
    let aws_env: Vec<(String, String)> = world
        .moto
        .aws_env()
        .into_iter()
        .filter(|(name, _)| !name.ends_with("REGION"))
        .collect();
    let mut env = world.endpoint_env();
    env.push(("DBSECRETSNAME", arn));
    let frontend = world.frontend_with_aws_env(aws_env, &env);

    let (status, body) = get(&frontend, "/");
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_cdk_style_secret_also_supplies_the_endpoint() {
    let world = World::new();
    let secret = json!({"username": ROLE, "password": FIRST_PASSWORD, "engine": "postgres",
                        "host": world.pg.host(), "port": world.pg.port(), "dbname": world.db});
    world
        .moto
        .create_secret("demo/db", &secret.to_string())
        .expect("secret");
    let frontend = world.frontend(&[("DBSECRETSNAME", "demo/db".to_owned())]);

    let (status, body) = get(&frontend, "/");
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(&frontend, "/test-connection");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["Response"],
        format!("Connection to 127.0.0.1:{} succeeded", world.pg.port())
    );
}

#[test]
fn a_missing_secret_gives_503_not_a_crash() {
    let world = World::new();
    let mut env = world.endpoint_env();
    env.push((
        "DBSECRETSNAME",
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:no-such-AbCdEf".to_owned(),
    ));
    let frontend = world.frontend(&env);

    for _ in 0..3 {
        let (status, body) = get(&frontend, "/");
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["status"], 503);
        assert!(
            !body.to_string().contains("ResourceNotFound"),
            "the cause stays in the log: {body}"
        );
    }
    assert_eq!(get(&frontend, "/health").0, 200);
    let logs = frontend.logs();
    assert!(
        logs.contains("ResourceNotFoundException"),
        "the log names the cause"
    );
    // Each request above kept retrying connections for its acquire timeout (about 25 attempts
    // in all); a failed read is held for 5 s, so Secrets Manager was asked about once per 5 s.
    let reads = logs.matches("reading the database secret failed").count();
    assert!((1..=3).contains(&reads), "{reads} Secrets Manager reads");
}

#[test]
fn an_unreachable_secrets_manager_is_logged_with_the_network_fix() {
    let world = World::new();
    let mut aws_env = world.moto.aws_env();
    let nothing_listens = harness::closed_port_url().expect("a free port");
    for (name, value) in &mut aws_env {
        if name == "AWS_ENDPOINT_URL_SECRETS_MANAGER" {
            value.clone_from(&nothing_listens);
        }
    }
    let mut env = world.endpoint_env();
    env.push(("DBSECRETSNAME", "demo/db".to_owned()));
    let frontend = world.frontend_with_aws_env(aws_env, &env);

    let (status, body) = get(&frontend, "/");
    assert_eq!(status, 503, "{body}");
    assert!(
        !body.to_string().contains("NAT"),
        "the diagnosis is for the operator's log, not the client: {body}"
    );
    let logs = frontend.logs();
    let line = logs
        .lines()
        .find(|line| line.contains("Secrets Manager is unreachable"))
        .unwrap_or_else(|| panic!("no diagnosis in the log:\n{logs}"));
    assert!(
        line.contains("NAT gateway") && line.contains("VPC endpoint") && line.contains("\"level\":\"ERROR\""),
        "{line}"
    );
}

#[test]
fn a_rotated_password_is_picked_up_without_a_restart() {
    let world = World::new();
    let arn = world
        .moto
        .create_secret(
            "rds!cluster-rotating",
            &json!({"username": ROLE, "password": FIRST_PASSWORD}).to_string(),
        )
        .expect("secret");
    let mut env = world.endpoint_env();
    env.extend([
        ("DBSECRETSNAME", arn.clone()),
        ("DB_POOL_SIZE", "3".to_owned()),
        ("DB_WRITERS", "1".to_owned()),
        // Re-reading the secret from moto plus a new login, on a machine busy with other tests,
        // must not be mistaken for an outage.
        ("DB_ACQUIRE_TIMEOUT", "15s".to_owned()),
    ]);
    let frontend = world.frontend(&env);
    assert_eq!(get(&frontend, "/").0, 200);

    // Rotation: the database and the secret get the new password; sessions opened with the old
    // one are ended so the service has to open new connections.
    world
        .pg
        .set_password(ROLE, ROTATED_PASSWORD)
        .expect("password changed");
    world
        .moto
        .put_secret_value(
            &arn,
            &json!({"username": ROLE, "password": ROTATED_PASSWORD}).to_string(),
        )
        .expect("secret rotated");
    world
        .pg
        .with_admin_client("postgres", |client| {
            client.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
                &[&ROLE],
            )?;
            Ok(())
        })
        .expect("old sessions ended");

    // The pooled sessions were ended and the old password no longer works: the service must
    // notice both (retry on a fresh connection, re-read the secret) without failing a request.
    let (status, body) = get(&frontend, "/");
    assert_eq!(status, 200, "the first request after rotation: {body}");
    let mut bodies = vec![body];
    for _ in 0..20 {
        let (status, body) = get(&frontend, "/recent-visits");
        assert_eq!(status, 200, "{body}");
        bodies.push(body);
    }
    assert!(
        frontend.logs().contains("re-reading the secret"),
        "rotation is visible in the log"
    );
    assert_no_password_anywhere(&frontend, &bodies);
}
