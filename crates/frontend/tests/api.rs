//! The frontend's routes in-process (poem's test client, the same middleware as in production)
//! against a real PostgreSQL and real HTTP stand-ins for the private service.

use std::time::{Duration, Instant};

use harness::{HttpStub, Postgres, Reply};
use poem::EndpointExt;
use poem::http::{HeaderValue, StatusCode};
use poem::test::TestClient;
use serde_json::{Value, json};

/// A running app (as a test client) over its own fresh database.
struct TestApp {
    client: TestClient<poem::endpoint::BoxEndpoint<'static>>,
    pg: Postgres,
    db: String,
}

impl TestApp {
    async fn start(extra_args: &[&str]) -> Self {
        let pg = Postgres::start().expect("PostgreSQL starts");
        Self::on(pg, extra_args).await
    }

    async fn on(pg: Postgres, extra_args: &[&str]) -> Self {
        let db = pg.create_database().expect("database created");
        let port = pg.port().to_string();
        let mut args = vec![
            "frontend",
            "--db-host",
            pg.host(),
            "--db-port",
            &port,
            "--db-name",
            &db,
            "--db-user",
            "postgres",
            "--db-pass",
            pg.superuser_password(),
            // Long enough for a first connection's TLS handshake and migrations on a busy machine.
            "--db-acquire-timeout",
            "3s",
        ];
        args.extend_from_slice(extra_args);
        let client = app_client(&args).await;
        Self { client, pg, db }
    }

    async fn get(&self, path: &str) -> (StatusCode, Option<String>, Value) {
        send(self.client.get(path)).await
    }

    fn query(&self, sql: &str) -> Vec<postgres::Row> {
        let sql = sql.to_owned();
        self.pg
            .with_admin_client(&self.db, move |client| Ok(client.query(sql.as_str(), &[])?))
            .expect("admin query")
    }

    fn stored_user_agents(&self) -> Vec<Option<String>> {
        self.query("SELECT user_agent FROM access ORDER BY last_update")
            .iter()
            .map(|row| row.get(0))
            .collect()
    }
}

async fn app_client(args: &[&str]) -> TestClient<poem::endpoint::BoxEndpoint<'static>> {
    let mut settings = frontend::Config::try_parse_from_args(args).expect("valid settings");
    let (app, _) = frontend::build(&mut settings).await.expect("app builds");
    TestClient::new(
        service_kit::serve::with_common_middleware(app)
            .map_to_response()
            .boxed(),
    )
}

async fn send(
    request: poem::test::TestRequestBuilder<'_, poem::endpoint::BoxEndpoint<'static>>,
) -> (StatusCode, Option<String>, Value) {
    let response = request.send().await.0;
    let status = response.status();
    let content_type = response.content_type().map(str::to_owned);
    let body = response
        .into_body()
        .into_json::<Value>()
        .await
        .unwrap_or(Value::Null);
    (status, content_type, body)
}

fn assert_problem(status: StatusCode, content_type: Option<String>, body: &Value, expected: StatusCode) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    assert_eq!(body["status"], expected.as_u16());
    assert!(
        body["detail"].as_str().is_some_and(|detail| !detail.is_empty()),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_visit_is_committed_before_it_is_acknowledged() {
    let app = TestApp::start(&[]).await;
    let (status, _, body) = send(app.client.get("/").header("User-Agent", "walkthrough/1.0")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"Response": "Registered request"}));
    assert_eq!(app.stored_user_agents(), vec![Some("walkthrough/1.0".to_owned())]);
}

/// HEAD is GET without the body (RFC 9110 9.3.2), so `HEAD /` records a visit as `GET /` does:
/// a client or monitor probing `/` with HEAD is a visitor like any other.
#[tokio::test(flavor = "multi_thread")]
async fn head_records_a_visit_like_get_without_a_body() {
    let app = TestApp::start(&[]).await;
    let response = app
        .client
        .head("/")
        .header("User-Agent", "probe/1.0")
        .send()
        .await
        .0;
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().into_bytes().await.expect("body");
    assert!(body.is_empty(), "a HEAD answer has no body");
    assert_eq!(app.stored_user_agents(), vec![Some("probe/1.0".to_owned())]);
}

#[tokio::test(flavor = "multi_thread")]
async fn recent_visits_are_the_ten_newest_newest_first() {
    let app = TestApp::start(&[]).await;
    for n in 0..12 {
        let (status, _, _) = send(app.client.get("/").header("User-Agent", format!("agent-{n}"))).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, _, body) = app.get("/recent-visits").await;
    assert_eq!(status, StatusCode::OK);
    let visits = body["Response"].as_array().expect("a list");
    let agents: Vec<&str> = visits
        .iter()
        .map(|visit| visit["user_agent"].as_str().expect("agent"))
        .collect();
    let expected: Vec<String> = (2..12).rev().map(|n| format!("agent-{n}")).collect();
    assert_eq!(agents, expected);
    for visit in visits {
        let timestamp = visit["timestamp"].as_str().expect("timestamp");
        chrono::DateTime::parse_from_rfc3339(timestamp).expect("RFC 3339");
        assert!(
            timestamp.ends_with("+00:00") || timestamp.ends_with('Z'),
            "UTC: {timestamp}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_user_agents_are_stored_verbatim_or_truncated_never_executed() {
    let app = TestApp::start(&[]).await;
    let injection = "x'); DROP TABLE access; --";
    let long = "A".repeat(10 * 1024);
    let cases: Vec<Option<HeaderValue>> = vec![
        Some(HeaderValue::from_static(injection)),
        Some(HeaderValue::from_str(&long).expect("header")),
        Some(HeaderValue::from_bytes(b"bot \xff\xfe end").expect("opaque bytes")),
        None,
    ];
    for user_agent in cases {
        let mut request = app.client.get("/");
        if let Some(value) = user_agent {
            request = request.header("User-Agent", value);
        }
        let (status, _, _) = send(request).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(
        app.stored_user_agents(),
        vec![
            Some(injection.to_owned()),
            Some("A".repeat(250)),
            Some("bot \u{fffd}\u{fffd} end".to_owned()),
            None
        ]
    );
    let (_, _, body) = app.get("/recent-visits").await;
    assert_eq!(
        body["Response"][0]["user_agent"],
        Value::Null,
        "absent agent reads back as null"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_visits_each_get_their_own_row() {
    let app = TestApp::start(&[]).await;
    let requests = (0..200).map(|n| {
        let request = app
            .client
            .get("/")
            .header("User-Agent", format!("concurrent-{n}"));
        async move { send(request).await.0 }
    });
    let statuses = futures_util::future::join_all(requests).await;
    assert!(statuses.iter().all(|status| *status == StatusCode::OK));
    let mut stored: Vec<String> = app
        .stored_user_agents()
        .into_iter()
        .map(|agent| agent.expect("set"))
        .collect();
    stored.sort();
    let mut expected: Vec<String> = (0..200).map(|n| format!("concurrent-{n}")).collect();
    expected.sort();
    assert_eq!(stored, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn recent_visits_are_read_through_the_index() {
    let app = TestApp::start(&[]).await;
    let (status, _, _) = app.get("/").await; // applies the schema
    assert_eq!(status, StatusCode::OK);
    app.query(
        "INSERT INTO access SELECT now() - n * interval '1 second', 'seed' FROM generate_series(1, 20000) n",
    );
    app.query("ANALYZE access");
    let plan: Vec<String> = app
        .query(&format!("EXPLAIN {}", frontend::db::RECENT_VISITS))
        .iter()
        .map(|row| row.get(0))
        .collect();
    let plan = plan.join("\n");
    assert!(plan.contains("Index Scan using access_last_update_idx"), "{plan}");
    assert!(!plan.contains("Seq Scan"), "{plan}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_database_gives_503_problems_and_recovers_without_restart() {
    let mut app = TestApp::start(&[]).await;
    assert_eq!(app.get("/").await.0, StatusCode::OK);

    app.pg.stop().expect("PostgreSQL stops");
    for path in ["/", "/recent-visits", "/"] {
        let started = Instant::now();
        let (status, content_type, body) = app.get(path).await;
        assert_problem(status, content_type, &body, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            !body.to_string().contains("connection refused"),
            "no driver text: {body}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "bounded by the acquire timeout"
        );
    }
    assert_eq!(
        app.get("/health").await.0,
        StatusCode::OK,
        "health does not follow the database"
    );

    app.pg.restart().expect("PostgreSQL restarts");
    // Pooled sessions died with the server; the first request after it is back must not fail.
    assert_eq!(
        app.get("/").await.0,
        StatusCode::OK,
        "no recovery after the database came back"
    );
    assert_eq!(app.get("/recent-visits").await.0, StatusCode::OK);
    // Exactly the acknowledged visits are stored: the first, and the one after recovery.
    assert_eq!(app.stored_user_agents().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_statement_blocked_past_the_timeout_fails_alone_and_in_time() {
    let app = TestApp::start(&["--db-statement-timeout", "500ms"]).await;
    assert_eq!(app.get("/").await.0, StatusCode::OK);

    let db = app.db.clone();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let mut holder = std::thread::scope(|scope| scope.spawn(|| app.pg.admin_client(&db)).join())
        .expect("admin thread")
        .expect("admin client");
    let lock_holder = std::thread::spawn(move || {
        let mut transaction = holder.transaction().expect("transaction");
        transaction
            .execute("LOCK TABLE access IN ACCESS EXCLUSIVE MODE", &[])
            .expect("lock");
        locked_tx.send(()).expect("signal");
        release_rx.recv().ok();
        transaction.rollback().expect("rollback");
    });
    locked_rx.recv().expect("lock taken");

    let started = Instant::now();
    let (status, content_type, body) = app.get("/").await;
    assert_problem(status, content_type, &body, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered within the statement timeout"
    );
    assert_eq!(app.get("/health").await.0, StatusCode::OK);

    release_tx.send(()).expect("release");
    lock_holder.join().expect("lock holder");
    assert_eq!(app.get("/").await.0, StatusCode::OK);
    assert_eq!(app.get("/recent-visits").await.0, StatusCode::OK);
    assert_eq!(
        app.stored_user_agents().len(),
        2,
        "the timed-out visit left no row"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_database_the_visit_routes_say_what_to_configure() {
    let client = app_client(&["frontend"]).await;
    for path in ["/", "/recent-visits"] {
        let (status, content_type, body) = send(client.get(path)).await;
        assert_problem(status, content_type, &body, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|detail| detail.contains("DB_HOST")),
            "{body}"
        );
    }
    assert_eq!(send(client.get("/health")).await.2, json!({"Status": "Healthy"}));
}

async fn private_service_client(url: &str) -> TestClient<poem::endpoint::BoxEndpoint<'static>> {
    app_client(&[
        "frontend",
        "--ecs-private-service",
        url,
        "--ecs-private-service-timeout",
        "500ms",
    ])
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_private_service_answer_is_relayed_as_an_object() {
    let task = json!({"TaskArn": "arn:aws:ecs:task/1", "Cluster": "c", "LaunchType": "FARGATE",
                      "ServiceName": "private-service", "IpAddress": "10.0.1.23"});
    let stub = HttpStub::json(200, task.clone()).expect("stub");
    let (status, _, body) = send(
        private_service_client(&stub.url())
            .await
            .get("/ecs-private-service"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "Response": task }));
}

#[tokio::test(flavor = "multi_thread")]
async fn private_service_failures_map_to_502_and_504() {
    let cases = [
        (
            HttpStub::json(500, json!({"error": "boom"})).expect("stub"),
            StatusCode::BAD_GATEWAY,
        ),
        (
            HttpStub::json(200, json!(["not", "an", "object"])).expect("stub"),
            StatusCode::BAD_GATEWAY,
        ),
        (
            HttpStub::start(Reply::Text(200, "<html>".into())).expect("stub"),
            StatusCode::BAD_GATEWAY,
        ),
        (
            HttpStub::start(Reply::Garbage).expect("stub"),
            StatusCode::BAD_GATEWAY,
        ),
        (
            HttpStub::start(Reply::Close).expect("stub"),
            StatusCode::BAD_GATEWAY,
        ),
        (
            HttpStub::start(Reply::Hang).expect("stub"),
            StatusCode::GATEWAY_TIMEOUT,
        ),
    ];
    for (stub, expected) in cases {
        let started = Instant::now();
        let (status, content_type, body) = send(
            private_service_client(&stub.url())
                .await
                .get("/ecs-private-service"),
        )
        .await;
        assert_problem(status, content_type, &body, expected);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "bounded by the 500 ms deadline"
        );
    }
    let down = harness::closed_port_url().expect("port");
    let (status, content_type, body) =
        send(private_service_client(&down).await.get("/ecs-private-service")).await;
    assert_problem(status, content_type, &body, StatusCode::BAD_GATEWAY);

    let (status, content_type, body) =
        send(app_client(&["frontend"]).await.get("/ecs-private-service")).await;
    assert_problem(status, content_type, &body, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("ECSPRIVATESERVICE"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn test_connection_reaches_the_database_endpoint_by_default() {
    let app = TestApp::start(&[]).await;
    let (status, _, body) = app.get("/test-connection").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let expected = format!("Connection to 127.0.0.1:{} succeeded", app.pg.port());
    assert_eq!(body["Response"], expected.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn test_connection_reports_an_unreachable_target() {
    let closed = harness::free_port().expect("port").to_string();
    let client = app_client(&["frontend", "--target", "127.0.0.1", "--target-port", &closed]).await;
    let (status, content_type, body) = send(client.get("/test-connection")).await;
    assert_problem(status, content_type, &body, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("refused")),
        "{body}"
    );

    let client = app_client(&[
        "frontend",
        "--target",
        "no-such-host.invalid",
        "--target-port",
        "5432",
    ])
    .await;
    let (status, content_type, body) = send(client.get("/test-connection")).await;
    assert_problem(status, content_type, &body, StatusCode::SERVICE_UNAVAILABLE);

    let (status, content_type, body) = send(app_client(&["frontend"]).await.get("/test-connection")).await;
    assert_problem(status, content_type, &body, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("TARGET"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_lists_every_route_and_its_statuses() {
    let client = app_client(&["frontend"]).await;
    let (status, _, spec) = send(client.get("/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    let statuses = |path: &str| -> Vec<String> {
        let mut codes: Vec<String> = spec["paths"][path]["get"]["responses"]
            .as_object()
            .expect(path)
            .keys()
            .cloned()
            .collect();
        codes.sort();
        codes
    };
    assert_eq!(statuses("/"), ["200", "503"]);
    assert_eq!(statuses("/recent-visits"), ["200", "503"]);
    assert_eq!(statuses("/ecs-private-service"), ["200", "502", "503", "504"]);
    assert_eq!(statuses("/test-connection"), ["200", "503"]);
    assert_eq!(statuses("/health"), ["200"]);
    let problem = &spec["paths"]["/"]["get"]["responses"]["503"]["content"]["application/problem+json"];
    assert!(problem.is_object(), "503 documented as problem+json");

    let docs = client.get("/docs").send().await.0;
    assert_eq!(docs.status(), StatusCode::OK);
    let html = docs.into_body().into_string().await.expect("html");
    assert!(html.contains("swagger-ui"), "Swagger UI page");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_routes_and_methods_answer_problem_json() {
    let client = app_client(&["frontend"]).await;
    let (status, content_type, body) = send(client.get("/no-such-route")).await;
    assert_problem(status, content_type, &body, StatusCode::NOT_FOUND);
    let (status, content_type, body) = send(client.post("/recent-visits")).await;
    assert_problem(status, content_type, &body, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_verify_full_and_require_reach_a_tls_server() {
    let pg = Postgres::start_with_tls().expect("PostgreSQL with TLS");
    let ca = pg.ca_cert_path().expect("CA").display().to_string();
    let app = TestApp::on(pg, &["--db-sslmode", "verify-full", "--db-sslrootcert", &ca]).await;
    assert_eq!(app.get("/").await.0, StatusCode::OK);
    let ssl: Vec<bool> = app
        .query("SELECT ssl FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE application_name = 'frontend'")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(
        !ssl.is_empty() && ssl.iter().all(|on| *on),
        "the app's sessions are encrypted: {ssl:?}"
    );

    let app = TestApp::on(app.pg, &["--db-sslmode", "require"]).await;
    assert_eq!(app.get("/").await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_full_refuses_a_server_signed_by_another_ca() {
    let other = Postgres::start_with_tls().expect("other CA");
    let wrong_ca = other.ca_cert_path().expect("CA").display().to_string();
    let pg = Postgres::start_with_tls().expect("PostgreSQL with TLS");
    let app = TestApp::on(
        pg,
        &["--db-sslmode", "verify-full", "--db-sslrootcert", &wrong_ca],
    )
    .await;
    let (status, content_type, body) = app.get("/").await;
    assert_problem(status, content_type, &body, StatusCode::SERVICE_UNAVAILABLE);
}
