//! The walkthrough of crates/frontend/README.md, step by step, against the running system.

use chrono::{DateTime, Utc};
use harness::ecs_task_metadata_fixture;
use serde_json::json;
use system_tests::{TestSystem, get};

#[test]
fn a_visit_is_registered_and_listed_newest_first_with_its_user_agent() {
    let system = TestSystem::spawn();
    let before = Utc::now();

    let first = system.visit("/", "walkthrough/1.0 (first)");
    assert_eq!(
        (first.status, first.json()),
        (200, json!({"Response": "Registered request"}))
    );
    let second = system.visit("/", "walkthrough/2.0 (second)");
    assert_eq!(
        (second.status, second.json()),
        (200, json!({"Response": "Registered request"}))
    );

    let recent = system.visit("/recent-visits", "walkthrough/reader");
    assert_eq!(recent.status, 200, "{}", recent.body);
    let visits = recent.json()["Response"].as_array().cloned().unwrap_or_default();
    let agents: Vec<_> = visits.iter().map(|visit| visit["user_agent"].clone()).collect();
    assert_eq!(
        agents,
        [
            json!("walkthrough/2.0 (second)"),
            json!("walkthrough/1.0 (first)")
        ]
    );

    let times: Vec<DateTime<Utc>> = visits
        .iter()
        .map(|visit| {
            let text = visit["timestamp"].as_str().unwrap_or_default();
            assert!(text.ends_with('Z') || text.ends_with("+00:00"), "not UTC: {text}");
            DateTime::parse_from_rfc3339(text)
                .unwrap_or_else(|error| panic!("not RFC 3339 ({error}): {text}"))
                .with_timezone(&Utc)
        })
        .collect();
    assert!(times[0] >= times[1], "not newest first: {times:?}");
    assert!(times[1] >= before - chrono::Duration::seconds(1) && times[0] <= Utc::now());
    assert_eq!(system.stored_visit_count(), 2);

    system.stop_and_assert_no_secret_in_logs();
}

#[test]
fn the_private_service_answers_through_the_frontend_with_its_task_summary() {
    let system = TestSystem::spawn();
    let task = ecs_task_metadata_fixture().expect("fixture");
    let summary = json!({
        "TaskArn": task["TaskARN"],
        "Cluster": task["Cluster"],
        "LaunchType": "FARGATE",
        "ServiceName": task["Containers"][0]["Name"],
        "IpAddress": task["Containers"][0]["Networks"][0]["IPv4Addresses"][0],
    });

    let direct = get(&system.private_service.url("/"), Some("system-tests"));
    assert_eq!((direct.status, direct.json()), (200, summary.clone()));

    let relayed = system.visit("/ecs-private-service", "system-tests");
    assert_eq!(relayed.status, 200, "{}", relayed.body);
    // An object, not a stringified byte representation of one.
    assert_eq!(relayed.json(), json!({ "Response": summary }));
    assert!(system.metadata.requests() >= 2);

    system.stop_and_assert_no_secret_in_logs();
}

#[test]
fn test_connection_reaches_the_database_endpoint() {
    let system = TestSystem::spawn();
    let answer = system.visit("/test-connection", "system-tests");
    assert_eq!(answer.status, 200, "{}", answer.body);
    let response = answer.json()["Response"].as_str().unwrap_or_default().to_string();
    assert!(response.contains("succeeded"), "{response}");
    assert!(
        response.contains(&format!("127.0.0.1:{}", system.postgres.port())),
        "{response}"
    );
    system.stop_and_assert_no_secret_in_logs();
}

#[test]
fn docs_and_the_openapi_document_describe_every_route() {
    let system = TestSystem::spawn();

    let docs = system.visit("/docs", "browser");
    assert_eq!(docs.status, 200);
    assert!(
        docs.content_type.starts_with("text/html"),
        "{}",
        docs.content_type
    );
    assert!(docs.body.to_lowercase().contains("swagger"), "{}", docs.body);

    let spec = system.visit("/openapi.json", "system-tests");
    assert_eq!(spec.status, 200);
    let spec = spec.json();
    let routes = [
        ("/", &["200", "503"][..]),
        ("/recent-visits", &["200", "503"]),
        ("/ecs-private-service", &["200", "502", "504"]),
        ("/test-connection", &["200", "503"]),
        ("/health", &["200"]),
    ];
    for (path, statuses) in routes {
        let responses = &spec["paths"][path]["get"]["responses"];
        for status in statuses {
            assert!(
                responses.get(status).is_some(),
                "GET {path} does not document {status}: {responses}"
            );
        }
    }

    let health = system.visit("/health", "probe");
    assert_eq!(
        (health.status, health.json()),
        (200, json!({"Status": "Healthy"}))
    );
    let private_health = get(&system.private_service.url("/health"), Some("probe"));
    assert_eq!(
        (private_health.status, private_health.json()),
        (200, json!({"Status": "Healthy"}))
    );

    system.stop_and_assert_no_secret_in_logs();
}

#[test]
fn hostile_user_agents_cross_the_real_http_stack_and_are_stored_safely() {
    let system = TestSystem::spawn();
    let injection = "x'); DROP TABLE access; --";
    let huge = "A".repeat(10 * 1024);

    assert_eq!(system.visit("/", injection).status, 200);
    assert_eq!(system.visit("/", &huge).status, 200);
    let raw = ureq::http::HeaderValue::from_bytes(b"bytes \xff\xfe end").expect("opaque header");
    let mut answer = system_tests::client(std::time::Duration::from_secs(10))
        .get(system.frontend.url("/"))
        .header("User-Agent", raw)
        .call()
        .expect("GET / with non-UTF-8 bytes");
    assert_eq!(answer.status(), 200, "{:?}", answer.body_mut().read_to_string());
    assert_eq!(get(&system.frontend.url("/"), None).status, 200);

    let recent = system.visit("/recent-visits", "reader");
    assert_eq!(recent.status, 200, "{}", recent.body);
    let agents: Vec<_> = recent.json()["Response"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|visit| visit["user_agent"].clone())
        .collect();
    assert_eq!(
        agents,
        [
            serde_json::Value::Null,
            json!("bytes \u{fffd}\u{fffd} end"),
            json!("A".repeat(250)),
            json!(injection),
        ]
    );
    // The table is still there, with exactly these rows.
    assert_eq!(system.stored_visit_count(), 4);
    system.stop_and_assert_no_secret_in_logs();
}
