//! No route of either service reads a request body. `.cargo/audit.toml` ignores two quick-xml
//! advisories (denial of service on untrusted XML) on exactly that ground: quick-xml is linked in
//! for poem's XML extractor and payload, which only a route taking a body could reach. If a
//! route starts to take one, this fails and the ignore entries must be revisited.

use std::time::Duration;

use serde_json::Value;
use system_tests::{TestSystem, client, get};

/// Quadratic in quick-xml < 0.41 if parsed: many attributes on one start tag, and unclosed.
fn hostile_xml() -> String {
    let attributes: String = (0..2_000).map(|n| format!(" a{n}=\"x\"")).collect();
    format!("<?xml version=\"1.0\"?><visit xmlns:p=\"urn:p\"{attributes}>")
}

fn documented_paths(spec: &Value) -> Vec<(String, Vec<String>)> {
    spec["paths"]
        .as_object()
        .expect("an OpenAPI document has paths")
        .iter()
        .map(|(path, operations)| {
            let methods = operations
                .as_object()
                .expect("operations")
                .iter()
                .map(|(method, operation)| {
                    assert!(
                        operation.get("requestBody").is_none(),
                        "{method} {path} takes a request body: {operation}"
                    );
                    method.clone()
                })
                .collect();
            (path.clone(), methods)
        })
        .collect()
}

#[test]
fn no_route_of_either_service_takes_a_request_body() {
    let system = TestSystem::spawn();
    let agent = client(Duration::from_secs(15));
    for (name, base) in [
        ("frontend", system.frontend.url("")),
        ("private-service", system.private_service.url("")),
    ] {
        let spec = get(&format!("{base}/openapi.json"), Some("audit")).json();
        let paths = documented_paths(&spec);
        assert!(!paths.is_empty(), "{name} documents no route");
        for (path, methods) in paths {
            assert_eq!(methods, ["get"], "{name} {path}: only GET is served");
            let url = format!("{base}{path}");
            for method in ["POST", "PUT", "PATCH"] {
                let request = ureq::http::Request::builder()
                    .method(method)
                    .uri(&url)
                    .header("Content-Type", "application/xml")
                    .body(hostile_xml())
                    .expect("a request");
                let response = agent
                    .run(request)
                    .unwrap_or_else(|error| panic!("{method} {url}: {error}"));
                assert_eq!(response.status(), 405, "{name}: {method} {path} with an XML body");
            }
            // A GET that carried an XML body is answered as if it had none: nothing parsed it.
            let without_body = get(&url, Some("audit")).status;
            let request = ureq::http::Request::builder()
                .method("GET")
                .uri(&url)
                .header("Content-Type", "application/xml")
                .header("User-Agent", "audit")
                .body(hostile_xml())
                .expect("a request");
            let with_body = agent
                .run(request)
                .unwrap_or_else(|error| panic!("GET {url} with a body: {error}"))
                .status();
            assert_eq!(with_body, without_body, "{name}: GET {path} read its body");
        }
    }
}
