//! TLS to the database as on App Runner: `verify-full` against the RDS CA bundle built into the
//! frontend, or against the CAs in DB_SSLROOTCERT. A server the frontend cannot authenticate
//! gets no query: every database route answers 503, the log says why, nothing is written.

use harness::{Postgres, Service, binary};
use system_tests::{app_database, assert_no_secret_in_logs, frontend_env, get};

/// A TLS PostgreSQL (its certificate valid for `names`, issued by a throwaway CA) with the app's
/// role and database.
struct TlsDatabase {
    postgres: Postgres,
    database: String,
    password: String,
}

impl TlsDatabase {
    fn start(names: &[&str]) -> Self {
        let postgres = Postgres::start_with_tls_for(names).expect("start PostgreSQL with TLS");
        let (database, password) = app_database(&postgres);
        Self {
            postgres,
            database,
            password,
        }
    }

    fn test_ca(&self) -> String {
        self.postgres
            .ca_cert_path()
            .expect("a TLS cluster has a CA")
            .display()
            .to_string()
    }

    /// The frontend against this database, with `tls` replacing the local default (`disable`).
    fn frontend(&self, tls: &[(&str, &str)]) -> Service {
        let mut env: Vec<(String, String)> = frontend_env(&self.postgres, &self.database, &self.password, "")
            .into_iter()
            .filter(|(name, _)| name != "DB_SSLMODE" && name != "ECSPRIVATESERVICE")
            .collect();
        // A refused server costs each request its acquire timeout: keep the test short.
        env.push(("DB_ACQUIRE_TIMEOUT".into(), "1s".into()));
        env.extend(
            tls.iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned())),
        );
        Service::spawn(binary("frontend").expect("build frontend"), env).expect("start frontend")
    }

    /// Rows of the visits table; none if the frontend never got far enough to create it.
    fn stored_visits(&self) -> i64 {
        self.postgres
            .with_admin_client(&self.database, |client| {
                let exists: bool = client
                    .query_one("SELECT to_regclass('access') IS NOT NULL", &[])?
                    .get(0);
                Ok(if exists {
                    client.query_one("SELECT count(*) FROM access", &[])?.get(0)
                } else {
                    0
                })
            })
            .expect("count the stored visits")
    }
}

/// Every database route answers 503 problem+json that says nothing of certificates or hosts;
/// the log names the host and `reason`; no row was written.
fn assert_refused(db: &TlsDatabase, frontend: &Service, reason: &str) {
    for path in ["/", "/", "/recent-visits"] {
        let answer = get(&frontend.url(path), Some("tls-test"));
        let detail = answer.assert_problem(503);
        for leak in ["certificate", "issuer", "127.0.0.1", "localhost"] {
            assert!(
                !answer.body.contains(leak),
                "{path} told the client '{leak}': {}",
                answer.body
            );
        }
        assert!(!detail.is_empty());
    }
    let logs = frontend.logs();
    let rejection = logs
        .lines()
        .find(|line| line.contains("presented a certificate that DB_SSLMODE=verify-full rejects"))
        .unwrap_or_else(|| panic!("no certificate rejection in the log:\n{logs}"));
    assert!(rejection.contains(reason), "expected '{reason}': {rejection}");
    assert!(
        rejection.contains(db.postgres.host()),
        "the host is named: {rejection}"
    );
    assert!(rejection.contains("\"level\":\"ERROR\""), "{rejection}");
    assert_eq!(db.stored_visits(), 0, "a refused server got a row");
    assert_no_secret_in_logs(&[frontend], &[&db.password]);
}

#[test]
fn verify_full_with_the_servers_ca_runs_the_walkthrough() {
    let db = TlsDatabase::start(&["localhost", "127.0.0.1"]);
    let ca = db.test_ca();
    let frontend = db.frontend(&[("DB_SSLMODE", "verify-full"), ("DB_SSLROOTCERT", &ca)]);

    assert_eq!(get(&frontend.url("/"), Some("verified/1.0")).status, 200);
    let recent = get(&frontend.url("/recent-visits"), Some("reader")).json();
    assert_eq!(recent["Response"][0]["user_agent"], "verified/1.0", "{recent}");
    assert_eq!(get(&frontend.url("/test-connection"), None).status, 200);
    assert_eq!(db.stored_visits(), 1);
    let encrypted: Vec<bool> = db
        .postgres
        .with_admin_client(&db.database, |client| {
            Ok(client
                .query(
                    "SELECT ssl FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
                     WHERE application_name = 'frontend'",
                    &[],
                )?
                .iter()
                .map(|row| row.get(0))
                .collect())
        })
        .expect("session list");
    assert!(
        !encrypted.is_empty() && encrypted.iter().all(|on| *on),
        "{encrypted:?}"
    );
}

#[test]
fn the_built_in_rds_bundle_refuses_a_server_it_did_not_sign() {
    let db = TlsDatabase::start(&["localhost", "127.0.0.1"]);
    let frontend = db.frontend(&[("DB_SSLMODE", "verify-full")]);
    assert_refused(&db, &frontend, "unknown issuer");
}

#[test]
fn a_host_name_the_certificate_does_not_carry_is_refused_as_a_mismatch() {
    // Issued by the CA the frontend trusts, but for `localhost` only; the frontend dials 127.0.0.1.
    let db = TlsDatabase::start(&["localhost"]);
    let ca = db.test_ca();
    let frontend = db.frontend(&[("DB_SSLMODE", "verify-full"), ("DB_SSLROOTCERT", &ca)]);
    assert_refused(&db, &frontend, "name mismatch");
}

#[test]
fn on_app_runner_the_server_is_authenticated_by_default() {
    let db = TlsDatabase::start(&["localhost", "127.0.0.1"]);
    // No DB_SSLMODE: App Runner's default must refuse a server that is not an RDS one ...
    let frontend = db.frontend(&[("APPRUNNERSERVICE", "true")]);
    assert_refused(&db, &frontend, "unknown issuer");
    // ... while the same server is reachable when authentication is turned off explicitly,
    // so the refusal above was verification, not the network.
    let unverified = db.frontend(&[("APPRUNNERSERVICE", "true"), ("DB_SSLMODE", "require")]);
    assert_eq!(get(&unverified.url("/"), Some("encrypted only")).status, 200);
}
