//! Security: the database password (a sentinel) and the database's own error texts never reach
//! a client, the password never reaches a log line; both binaries do their work as an
//! unprivileged user; `/test-connection` connects where the configuration says, whatever the
//! request says.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::{EcsMetadata, HttpStub, Postgres, Reply, ServiceCommand};
use reliability_tests::one_at_a_time;
use reliability_tests::raw::{RawResponse, exchange};
use reliability_tests::stack::{addr_of, frontend_command, terminate_frontend_sessions};

const SENTINEL: &str = "Sentinel-Pw-7c1e0b9a42";
/// What PostgreSQL and the driver say when things fail: for the log, never for a client.
const DB_ERROR_TEXTS: &[&str] = &[
    "password authentication failed",
    "canceling statement",
    "statement timeout",
    "terminating connection",
    "SQLSTATE",
    "db error",
    "error connecting to server",
    "FATAL",
    "ERROR:",
    "relation \"",
    "access_pkey",
];
const ROUTES: &[&str] = &[
    "/",
    "/recent-visits",
    "/test-connection",
    "/health",
    "/ecs-private-service",
    "/nope",
];

fn get(addr: std::net::SocketAddr, path: &str) -> RawResponse {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: r\r\nUser-Agent: security\r\nConnection: close\r\n\r\n");
    let mut answer = exchange(addr, request.as_bytes(), 1, Duration::from_secs(15)).expect("an answer");
    assert!(!answer.responses.is_empty(), "GET {path}: no answer");
    answer.responses.remove(0)
}

/// Every route once; panics if an answer carries the sentinel or a database error text.
fn sweep(addr: std::net::SocketAddr, phase: &str) -> Vec<(String, u16)> {
    let mut statuses = Vec::new();
    for path in ROUTES {
        let response = get(addr, path);
        let mut text = response.body_text();
        for (name, value) in &response.headers {
            text.push_str(&format!("\n{name}: {}", String::from_utf8_lossy(value)));
        }
        assert!(
            !text.contains(SENTINEL),
            "{phase}: GET {path} answered the database password"
        );
        for needle in DB_ERROR_TEXTS {
            assert!(
                !text.contains(needle),
                "{phase}: GET {path} answered database error text {needle:?}: {text}"
            );
        }
        assert!(
            response.status < 500
                || response.header("content-type") == Some(&b"application/problem+json"[..])
        );
        statuses.push((path.to_string(), response.status));
    }
    statuses
}

#[test]
fn neither_the_database_password_nor_database_error_text_reaches_a_response_or_the_log() {
    let _serial = one_at_a_time();
    let mut pg = Postgres::start().expect("PostgreSQL starts");
    pg.create_role("app", SENTINEL).expect("role created");
    let db = pg.create_database_with_owner("app").expect("database created");
    let frontend = frontend_command(&pg, &db, "app", SENTINEL)
        .expect("frontend binary")
        .envs([("DB_STATEMENT_TIMEOUT", "1s"), ("DB_ACQUIRE_TIMEOUT", "1s")])
        .spawn()
        .expect("frontend starts");
    let addr = addr_of(&frontend);

    let healthy = sweep(addr, "healthy");
    assert!(healthy.contains(&("/".to_owned(), 200)), "{healthy:?}");

    // A statement timeout.
    let locked = pg
        .with_admin_client(&db, |client| {
            let mut transaction = client.transaction()?;
            transaction.batch_execute("LOCK TABLE access IN ACCESS EXCLUSIVE MODE")?;
            let statuses = sweep(addr, "statement timeout");
            transaction.commit()?;
            Ok(statuses)
        })
        .expect("lock held");
    assert!(locked.contains(&("/".to_owned(), 503)), "{locked:?}");

    // The password no longer works and every session is gone: authentication failures.
    pg.set_password("app", "a-different-password")
        .expect("password changed");
    terminate_frontend_sessions(&pg, &db).expect("sessions ended");
    let rejected = sweep(addr, "password rejected");
    assert!(rejected.contains(&("/".to_owned(), 503)), "{rejected:?}");

    // The database is gone.
    pg.stop().expect("PostgreSQL stops");
    let down = sweep(addr, "database down");
    assert!(down.contains(&("/".to_owned(), 503)), "{down:?}");

    let logs = frontend.logs();
    assert!(
        !logs.contains(SENTINEL),
        "the database password appears in the frontend's log"
    );
    // The causes were logged for the operator (so the sweeps above really provoked them).
    for cause in ["password authentication failed", "statement timeout"] {
        assert!(logs.contains(cause), "the log does not say {cause:?}:\n{logs}");
    }

    // --help shows where the password comes from, never its value.
    let help = std::process::Command::new(harness::binary("frontend").expect("frontend binary"))
        .arg("--help")
        .env_clear()
        .env("DB_PASS", SENTINEL)
        .output()
        .expect("--help runs");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("DB_PASS") && !help.contains(SENTINEL), "{help}");
    println!(
        "security: 4 phases x {} routes, no password and no database error text answered",
        ROUTES.len()
    );
}

/// A copy of a workspace binary that any user may run (the build directory may not be).
fn world_executable_copy(dir: &Path, name: &str) -> PathBuf {
    let target = dir.join(name);
    std::fs::copy(harness::binary(name).expect("binary built"), &target).expect("binary copied");
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    target
}

/// (real, effective, saved, filesystem) uids and the effective capabilities of a process.
fn credentials(pid: u32) -> (String, String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(|value| value.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    (field("Uid:"), field("Gid:"), field("CapEff:"))
}

#[test]
fn both_binaries_do_their_work_as_an_unprivileged_user() {
    let _serial = one_at_a_time();
    let root = nix_is_root();
    let dir = tempfile::Builder::new()
        .prefix("reliability-bin-")
        .tempdir()
        .expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let nobody = |command: ServiceCommand| if root { command.user(65534, 65534) } else { command };

    let pg = Postgres::start().expect("PostgreSQL starts");
    let db = pg.create_database().expect("database created");
    let metadata = EcsMetadata::start().expect("metadata endpoint");
    let private_service = nobody(
        ServiceCommand::new(world_executable_copy(dir.path(), "private-service"))
            .env("ECS_CONTAINER_METADATA_URI_V4", metadata.uri_v4())
            .current_dir(dir.path()),
    )
    .spawn()
    .expect("private-service starts as nobody");
    let frontend = nobody(
        ServiceCommand::new(world_executable_copy(dir.path(), "frontend"))
            .envs([
                ("DB_HOST", pg.host().to_owned()),
                ("DB_PORT", pg.port().to_string()),
                ("DB_NAME", db.clone()),
                ("DB_USER", "postgres".to_owned()),
                ("DB_PASS", pg.superuser_password().to_owned()),
                ("ECSPRIVATESERVICE", private_service.url("")),
            ])
            .current_dir(dir.path()),
    )
    .spawn()
    .expect("frontend starts as nobody");

    for service in [&frontend, &private_service] {
        let (uid, gid, capabilities) = credentials(service.pid());
        if root {
            assert_eq!(uid, "65534 65534 65534 65534", "uids of {}", service.pid());
            assert_eq!(gid, "65534 65534 65534 65534", "gids of {}", service.pid());
        }
        assert!(!uid.split(' ').any(|id| id == "0"), "runs as root: {uid}");
        assert_eq!(capabilities, "0000000000000000", "holds capabilities");
    }
    // Real work, not just a health check: a visit committed, the private service called.
    let addr = addr_of(&frontend);
    assert_eq!(get(addr, "/").status, 200);
    assert_eq!(get(addr, "/recent-visits").status, 200);
    let relayed = get(addr, "/ecs-private-service");
    assert_eq!(relayed.status, 200, "{}", relayed.body_text());
    assert!(relayed.body_text().contains("TaskArn"), "{}", relayed.body_text());
    println!(
        "security: frontend and private-service served as uid {}",
        if root { "65534 (nobody)" } else { "non-root" }
    );
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .map(|ids| ids.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

#[test]
fn the_connection_test_goes_to_the_configured_target_whatever_the_request_says() {
    let _serial = one_at_a_time();
    let configured = HttpStub::start(Reply::Close).expect("configured target");
    let other = HttpStub::start(Reply::Close).expect("another host");
    let frontend = ServiceCommand::new(harness::binary("frontend").expect("frontend binary"))
        .envs([
            ("TARGET", "127.0.0.1".to_owned()),
            ("TARGETPORT", configured.port().to_string()),
        ])
        .spawn()
        .expect("frontend starts");
    let addr = addr_of(&frontend);
    let port = other.port();
    let attempts = [
        format!("GET /test-connection?target=127.0.0.1&targetport={port} HTTP/1.1\r\nHost: r\r\n"),
        format!(
            "GET /test-connection?TARGET=127.0.0.1&TARGETPORT={port}&host=127.0.0.1&port={port} HTTP/1.1\r\nHost: r\r\n"
        ),
        format!(
            "GET /test-connection HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Forwarded-Host: 127.0.0.1:{port}\r\n"
        ),
        format!(
            "GET /test-connection HTTP/1.1\r\nHost: r\r\nTarget: 127.0.0.1\r\nTargetPort: {port}\r\nX-Target: 127.0.0.1:{port}\r\n"
        ),
        format!("GET http://127.0.0.1:{port}/test-connection HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"),
        format!("GET /test-connection/127.0.0.1/{port} HTTP/1.1\r\nHost: r\r\n"),
        format!(
            "POST /test-connection HTTP/1.1\r\nHost: r\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{{\"target\":\"127.0.0.1\",\"port\":{port:>5}}}   "
        ),
    ];
    let mut answered = 0;
    for attempt in &attempts {
        let mut request = attempt.clone();
        if !request.starts_with("POST") {
            request.push_str("Connection: close\r\n\r\n");
        }
        let response = exchange(addr, request.as_bytes(), 1, Duration::from_secs(10))
            .expect("an answer")
            .responses
            .into_iter()
            .next()
            .expect("a response");
        let body = response.body_text();
        assert!(response.status < 500, "{attempt}: {} {body}", response.status);
        if response.status == 200 {
            answered += 1;
            assert!(
                body.contains(&format!("127.0.0.1:{}", configured.port()))
                    && !body.contains(&port.to_string()),
                "{attempt}: {body}"
            );
        }
    }
    // Give the stubs a moment to count, then: the other host was never contacted.
    std::thread::sleep(Duration::from_millis(200));
    assert!(answered >= 5, "only {answered} attempts reached the route");
    assert_eq!(
        other.requests(),
        0,
        "the request chose the connection test's target"
    );
    assert_eq!(
        configured.requests(),
        answered,
        "one connection to the configured target per 200"
    );
    println!(
        "security: {} attempts to redirect /test-connection, 0 reached another host",
        attempts.len()
    );
}
