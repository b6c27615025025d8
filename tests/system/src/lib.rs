//! Helpers for the whole-system tests in `tests/system/`: start the system the way the README
//! does (both binaries as processes, configured through their environment, against a real
//! PostgreSQL and the ECS metadata stand-in), then speak HTTP to it like a user would.
//!
//! These are test helpers: they panic with a message instead of returning errors, so a failing
//! test shows where it failed and (through [`harness::Service`]'s drop) what the services said.

use std::time::Duration;

use harness::{EcsMetadata, Postgres, Service, ServiceCommand, binary};
use serde_json::Value;

/// The role the frontend logs in as.
pub const APP_USER: &str = "app";

/// A password nobody would write by accident, so finding it in a log is proof of a leak.
pub fn sentinel_password(label: &str) -> String {
    format!("SENTINEL-{label}-{}", std::process::id())
}

/// One HTTP answer, as a client sees it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl Answer {
    /// The body as JSON (panics with the body if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.body))
    }

    /// Asserts an RFC 9457 problem with this status and returns its `detail`.
    pub fn assert_problem(&self, status: u16) -> String {
        assert_eq!(self.status, status, "body: {}", self.body);
        assert_eq!(
            self.content_type, "application/problem+json",
            "body: {}",
            self.body
        );
        let problem = self.json();
        assert_eq!(problem["status"], status, "{problem}");
        assert!(problem["title"].is_string(), "{problem}");
        problem["detail"]
            .as_str()
            .unwrap_or_else(|| panic!("a problem without detail: {problem}"))
            .to_string()
    }
}

/// A client with a deadline, that treats every status as an answer.
pub fn client(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// `GET url` with an optional User-Agent (none at all when `None`).
pub fn get(url: &str, user_agent: Option<&str>) -> Answer {
    let agent = client(Duration::from_secs(15));
    let mut request = agent.get(url);
    request = match user_agent {
        Some(user_agent) => request.header("User-Agent", user_agent),
        None => request
            .config()
            .user_agent(ureq::config::AutoHeaderValue::None)
            .build(),
    };
    let mut response = request
        .call()
        .unwrap_or_else(|error| panic!("GET {url}: {error}"));
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = response
        .body_mut()
        .read_to_string()
        .unwrap_or_else(|error| panic!("reading the answer to GET {url}: {error}"));
    Answer {
        status: response.status().as_u16(),
        content_type,
        body,
    }
}

/// The whole system of the README walkthrough, on loopback.
pub struct TestSystem {
    pub postgres: Postgres,
    /// The frontend's database (owned by [`APP_USER`]).
    pub database: String,
    /// The frontend's database password (a sentinel: see [`TestSystem::assert_no_secret_in_logs`]).
    pub password: String,
    pub metadata: EcsMetadata,
    pub private_service: Service,
    pub frontend: Service,
}

impl TestSystem {
    /// PostgreSQL with a fresh database and role, the metadata stand-in, `private-service`
    /// and `frontend` configured as `local-stack` does, all healthy.
    pub fn spawn() -> Self {
        let postgres = Postgres::start().expect("start PostgreSQL");
        let (database, password) = app_database(&postgres);
        let metadata = EcsMetadata::start().expect("start the ECS metadata stand-in");
        let private_service = spawn_private_service(&metadata);
        let frontend = Service::spawn(
            binary("frontend").expect("build frontend"),
            frontend_env(&postgres, &database, &password, &private_service.url("")),
        )
        .expect("start frontend");
        Self {
            postgres,
            database,
            password,
            metadata,
            private_service,
            frontend,
        }
    }

    /// `GET <frontend><path>` with this User-Agent.
    pub fn visit(&self, path: &str, user_agent: &str) -> Answer {
        get(&self.frontend.url(path), Some(user_agent))
    }

    /// Rows of the visits table, straight from the database.
    pub fn stored_visit_count(&self) -> i64 {
        self.postgres
            .with_admin_client(&self.database, |client| {
                Ok(client.query_one("SELECT count(*) FROM access", &[])?.get(0))
            })
            .expect("count the stored visits")
    }

    /// Stops both services with SIGTERM, asserts they exit 0, then that no line either wrote
    /// contains the database password.
    pub fn stop_and_assert_no_secret_in_logs(mut self) {
        for service in [&mut self.frontend, &mut self.private_service] {
            if service.try_exit_status().expect("exit status").is_none() {
                service.sigterm().expect("SIGTERM");
                let status = service
                    .wait_exit(Duration::from_secs(15))
                    .expect("exit after SIGTERM");
                assert!(status.success(), "exit status {status}");
            }
        }
        assert_no_secret_in_logs(&[&self.frontend, &self.private_service], &[&self.password]);
    }
}

/// The frontend's database on `postgres`: a fresh database owned by [`APP_USER`], whose password
/// is a sentinel (see [`sentinel_password`]). Returns the database name and the password.
pub fn app_database(postgres: &Postgres) -> (String, String) {
    let password = sentinel_password("db-pass");
    postgres
        .create_role(APP_USER, &password)
        .expect("create the app role");
    let database = postgres
        .create_database_with_owner(APP_USER)
        .expect("create the app database");
    (database, password)
}

/// Environment for `frontend` against `postgres`, as `local-stack` sets it.
pub fn frontend_env(
    postgres: &Postgres,
    database: &str,
    password: &str,
    private_service_url: &str,
) -> Vec<(String, String)> {
    [
        ("DB_HOST", postgres.host()),
        ("DB_PORT", &postgres.port().to_string()),
        ("DB_NAME", database),
        ("DB_USER", APP_USER),
        ("DB_PASS", password),
        ("DB_SSLMODE", "disable"),
        ("ECSPRIVATESERVICE", private_service_url),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_string(), value.to_string()))
    .collect()
}

/// `private-service` reading its task metadata from `metadata`.
pub fn spawn_private_service(metadata: &EcsMetadata) -> Service {
    ServiceCommand::new(binary("private-service").expect("build private-service"))
        .env("ECS_CONTAINER_METADATA_URI_V4", metadata.uri_v4())
        // Nothing here resolves it through a cache; the linger has its own test (runtime_contract).
        .env("STOP_LINGER", "0s")
        .spawn()
        .expect("start private-service")
}

/// Asserts that none of `secrets` appears in anything `services` wrote, and that they wrote
/// one JSON object per line (structured logs a collector can parse).
pub fn assert_no_secret_in_logs(services: &[&Service], secrets: &[&str]) {
    for service in services {
        let logs = service.logs();
        for secret in secrets {
            assert!(
                !logs.contains(secret),
                "a secret leaked into the logs of the service on port {}:\n{logs}",
                service.port()
            );
        }
        for line in logs.lines().filter(|line| !line.trim().is_empty()) {
            assert!(
                serde_json::from_str::<Value>(line).is_ok_and(|value| value.is_object()),
                "not a JSON log line: {line}"
            );
        }
    }
}

/// Repeats `GET url` until `accept` says yes or `timeout` passes; returns the last answer and
/// how many answers were not accepted.
pub fn get_until(url: &str, timeout: Duration, accept: impl Fn(&Answer) -> bool) -> (Answer, usize) {
    let deadline = std::time::Instant::now() + timeout;
    let mut rejected = 0;
    loop {
        let answer = get(url, Some("system-tests/retry"));
        if accept(&answer) || std::time::Instant::now() >= deadline {
            return (answer, rejected);
        }
        rejected += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
}
