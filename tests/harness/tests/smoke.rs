//! The harness itself works: each starter brings up the real thing, and it behaves.

use std::sync::Arc;
use std::time::Duration;

use harness::{EcsMetadata, HttpStub, Moto, Postgres, Reply, ServiceCommand, closed_port_url};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::json;

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

#[test]
fn postgres_serves_queries_and_keeps_data_across_stop_and_restart() -> anyhow::Result<()> {
    let mut pg = Postgres::start()?;
    let db = pg.create_database()?;
    let mut admin = pg.admin_client(&db)?;
    admin.batch_execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('kept')")?;
    let max: String = admin.query_one("SHOW max_connections", &[])?.get(0);
    assert!(max.parse::<u32>()? >= 300, "max_connections is {max}");
    drop(admin);

    pg.stop()?;
    assert!(
        pg.admin_client(&db).is_err(),
        "a stopped server must refuse connections"
    );

    pg.restart()?;
    let row = pg.admin_client(&db)?.query_one("SELECT v FROM t", &[])?;
    assert_eq!(row.get::<_, String>(0), "kept");
    Ok(())
}

#[test]
fn postgres_roles_log_in_with_their_password_only() -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    pg.create_role("app", "first 'password'")?;
    let db = pg.create_database_with_owner("app")?;
    let connect = |password: &str| {
        postgres::Config::new()
            .host(pg.host())
            .port(pg.port())
            .user("app")
            .password(password)
            .dbname(&db)
            .connect(postgres::NoTls)
    };
    let mut app = connect("first 'password'")?;
    // The owner may create tables (the services run their migrations as this role).
    app.batch_execute("CREATE TABLE mine (id int)")?;
    assert!(connect("wrong").is_err());

    pg.set_password("app", "second")?;
    let error = connect("first 'password'").err().map(|e| e.code().cloned());
    assert_eq!(
        error,
        Some(Some(postgres::error::SqlState::INVALID_PASSWORD)),
        "the old password must be refused with SQLSTATE 28P01"
    );
    connect("second")?;
    Ok(())
}

#[test]
fn postgres_with_tls_proves_its_identity_with_the_throwaway_ca() -> anyhow::Result<()> {
    let pg = Postgres::start_with_tls()?;
    let ca = pg.ca_cert_path().expect("a TLS server has a CA");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    for host in ["127.0.0.1", "localhost"] {
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(config.clone());
        let mut client = postgres::Config::new()
            .host(host)
            .port(pg.port())
            .user("postgres")
            .password(pg.superuser_password())
            .dbname("postgres")
            .ssl_mode(postgres::config::SslMode::Require)
            .connect(tls)?;
        let encrypted: bool = client
            .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])?
            .get(0);
        assert!(encrypted, "connection to {host} is not encrypted");
    }
    Ok(())
}

#[test]
fn moto_stores_secrets_and_their_new_values() -> anyhow::Result<()> {
    let moto = Moto::start()?;
    let arn = moto.create_secret("demo/db", r#"{"username":"app","password":"one"}"#)?;
    assert!(arn.starts_with("arn:aws:secretsmanager:us-east-1:"), "{arn}");

    // Read it back the way an SDK would, independently of the harness's own client.
    let read = |id: &str| -> anyhow::Result<serde_json::Value> {
        let mut response = agent(Duration::from_secs(10))
            .post(moto.endpoint())
            .header("X-Amz-Target", "secretsmanager.GetSecretValue")
            .header("Content-Type", "application/x-amz-json-1.1")
            .header("Authorization", harness::moto::AUTHORIZATION)
            .send(json!({ "SecretId": id }).to_string())?;
        assert_eq!(response.status(), 200);
        Ok(serde_json::from_str(&response.body_mut().read_to_string()?)?)
    };
    assert_eq!(
        read(&arn)?["SecretString"],
        r#"{"username":"app","password":"one"}"#
    );

    moto.put_secret_value("demo/db", r#"{"username":"app","password":"two"}"#)?;
    assert_eq!(
        read("demo/db")?["SecretString"],
        r#"{"username":"app","password":"two"}"#
    );

    let env = moto.aws_env();
    let endpoint = env
        .iter()
        .find(|(name, _)| name == "AWS_ENDPOINT_URL_SECRETS_MANAGER");
    assert_eq!(
        endpoint.map(|(_, value)| value.as_str()),
        Some(moto.endpoint().as_str())
    );
    Ok(())
}

#[test]
fn stubs_answer_hang_send_garbage_close_or_are_down() -> anyhow::Result<()> {
    let quick = agent(Duration::from_millis(500));

    let answering = HttpStub::json(503, json!({"down": true}))?;
    let mut response = quick.get(format!("{}/any/path", answering.url())).call()?;
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers().get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/json"[..])
    );
    assert_eq!(response.body_mut().read_to_string()?, r#"{"down":true}"#);
    assert_eq!(answering.requests(), 1);

    let slow = HttpStub::start(Reply::JsonAfter(Duration::from_millis(300), 200, json!([1])))?;
    let started = std::time::Instant::now();
    let mut response = quick.get(slow.url()).call()?;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        (response.status().as_u16(), response.body_mut().read_to_string()?),
        (200, "[1]".to_string())
    );

    let hanging = HttpStub::start(Reply::Hang)?;
    let started = std::time::Instant::now();
    let error = quick
        .get(hanging.url())
        .call()
        .expect_err("a hanging stub never answers");
    assert!(matches!(error, ureq::Error::Timeout(_)), "{error:?}");
    assert!(started.elapsed() >= Duration::from_millis(450));
    assert_eq!(hanging.requests(), 1);

    let garbage = HttpStub::start(Reply::Garbage)?;
    let error = quick.get(garbage.url()).call().expect_err("garbage is not HTTP");
    assert!(!matches!(error, ureq::Error::Timeout(_)), "{error:?}");

    let closing = HttpStub::start(Reply::Close)?;
    let error = quick.get(closing.url()).call().expect_err("nothing was said");
    assert!(!matches!(error, ureq::Error::Timeout(_)), "{error:?}");

    let error = quick.get(closed_port_url()?).call().expect_err("nobody listens");
    assert!(matches!(error, ureq::Error::Io(_)), "{error:?}");
    Ok(())
}

#[test]
fn ecs_metadata_serves_the_documented_task_under_its_uri() -> anyhow::Result<()> {
    let metadata = EcsMetadata::start()?;
    let quick = agent(Duration::from_secs(2));
    let mut task = quick.get(format!("{}/task", metadata.uri_v4())).call()?;
    assert_eq!(task.status(), 200);
    let task: serde_json::Value = serde_json::from_str(&task.body_mut().read_to_string()?)?;
    assert_eq!(task["LaunchType"], "FARGATE");
    assert_eq!(task, harness::ecs_task_metadata_fixture()?);

    let mut container = quick.get(metadata.uri_v4()).call()?;
    let container: serde_json::Value = serde_json::from_str(&container.body_mut().read_to_string()?)?;
    assert_eq!(container["Name"], task["Containers"][0]["Name"]);

    let base = metadata
        .uri_v4()
        .rsplit_once("/v4/")
        .map(|(base, _)| base.to_string());
    let elsewhere = quick.get(format!("{}/task", base.unwrap_or_default())).call()?;
    assert_eq!(elsewhere.status(), 404);
    assert_eq!(metadata.requests(), 3);
    Ok(())
}

#[test]
fn a_service_that_never_gets_healthy_is_reported_with_its_output() {
    let error = ServiceCommand::new("/bin/sh")
        .health_timeout(Duration::from_millis(300))
        .args(["-c", "echo listening on $PORT; exec sleep 30"])
        .spawn()
        .err()
        .map(|error| format!("{error:#}"))
        .unwrap_or_default();
    assert!(error.contains("did not answer 200"), "{error}");
    assert!(error.contains("listening on "), "{error}");

    let error = ServiceCommand::new("/bin/sh")
        .args(["-c", "echo refusing: DB_HOST is not set >&2; exit 3"])
        .spawn()
        .err()
        .map(|error| format!("{error:#}"))
        .unwrap_or_default();
    assert!(error.contains("exited early"), "{error}");
    assert!(error.contains("refusing: DB_HOST is not set"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn everything_works_from_inside_a_tokio_runtime() -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    let db = pg.create_database()?;
    let rows = pg.with_admin_client(&db, |client| Ok(client.query("SELECT 1", &[])?.len()))?;
    assert_eq!(rows, 1);
    let stub = HttpStub::json(200, json!({}))?;
    let metadata = EcsMetadata::start()?;
    assert_ne!(stub.port(), metadata.port());
    drop((stub, metadata, pg));
    Ok(())
}
