//! The private service's routes in-process against a real HTTP stand-in for the ECS task
//! metadata endpoint.

use std::time::{Duration, Instant};

use clap::Parser;
use harness::{EcsMetadata, HttpStub, Reply};
use poem::EndpointExt;
use poem::http::StatusCode;
use poem::test::TestClient;
use serde_json::{Value, json};

async fn get(metadata_uri: Option<&str>, path: &str) -> (StatusCode, Option<String>, Value) {
    let mut args = vec!["private-service", "--metadata-timeout", "500ms"];
    if let Some(uri) = metadata_uri {
        args.extend(["--metadata-uri", uri]);
    }
    let config = private_service::Config::try_parse_from(args).expect("valid config");
    let app = service_kit::serve::with_common_middleware(private_service::app(&config)).map_to_response();
    let response = TestClient::new(app).get(path).send().await.0;
    let status = response.status();
    let content_type = response.content_type().map(str::to_owned);
    (
        status,
        content_type,
        response.into_body().into_json().await.unwrap_or(Value::Null),
    )
}

fn assert_problem(answer: (StatusCode, Option<String>, Value), expected: StatusCode, detail_contains: &str) {
    let (status, content_type, body) = answer;
    assert_eq!(status, expected, "{body}");
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(detail_contains),
        "detail {detail:?} should mention {detail_contains:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_with_the_task_summary() {
    let metadata = EcsMetadata::start().expect("metadata endpoint");
    let (status, _, body) = get(Some(metadata.uri_v4()), "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({
            "TaskArn": "arn:aws:ecs:us-east-1:111122223333:task/demo/0123456789abcdef0123456789abcdef",
            "Cluster": "arn:aws:ecs:us-east-1:111122223333:cluster/demo",
            "LaunchType": "FARGATE",
            "ServiceName": "private-service",
            "IpAddress": "10.0.1.23",
        })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_field_missing_from_the_metadata_is_a_502_naming_it() {
    let mut task = harness::ecs_task_metadata_fixture().expect("fixture");
    task["Containers"][0]["Networks"] = json!([]);
    let metadata = EcsMetadata::serving(task).expect("metadata endpoint");
    assert_problem(
        get(Some(metadata.uri_v4()), "/").await,
        StatusCode::BAD_GATEWAY,
        "IPv4Addresses",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_or_failing_endpoint_is_a_502() {
    let down = harness::closed_port_url().expect("port");
    assert_problem(
        get(Some(&down), "/").await,
        StatusCode::BAD_GATEWAY,
        "unreachable",
    );
    let failing = HttpStub::json(500, json!({})).expect("stub");
    assert_problem(
        get(Some(&failing.url()), "/").await,
        StatusCode::BAD_GATEWAY,
        "500",
    );
    let garbage = HttpStub::start(Reply::Text(200, "not json".into())).expect("stub");
    assert_problem(
        get(Some(&garbage.url()), "/").await,
        StatusCode::BAD_GATEWAY,
        "JSON",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_endpoint_is_a_504_within_the_deadline() {
    let hung = HttpStub::start(Reply::Hang).expect("stub");
    let started = Instant::now();
    assert_problem(
        get(Some(&hung.url()), "/").await,
        StatusCode::GATEWAY_TIMEOUT,
        "500 ms",
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread")]
async fn outside_ecs_the_route_says_so_and_health_still_answers() {
    assert_problem(
        get(None, "/").await,
        StatusCode::BAD_GATEWAY,
        "ECS_CONTAINER_METADATA_URI_V4",
    );
    let (status, _, body) = get(None, "/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"Status": "Healthy"}));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_lists_both_routes() {
    let (status, _, spec) = get(None, "/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let codes = |path: &str| -> Vec<String> {
        spec["paths"][path]["get"]["responses"]
            .as_object()
            .expect(path)
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(codes("/"), ["200", "502", "504"]);
    assert_eq!(codes("/health"), ["200"]);
}
