//! One log line per request: method, path, status, latency and request id.

use std::time::Instant;

use poem::http::HeaderValue;
use poem::{Endpoint, IntoResponse, Request, Response, Result};

const REQUEST_ID: &str = "x-request-id";

/// `around` middleware: logs each request once, after the response is known, and echoes the
/// request id (the caller's `X-Request-Id`, else a fresh UUID) so a client can quote it.
pub async fn log_request<E: Endpoint>(next: E, request: Request) -> Result<Response> {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .cloned()
        .unwrap_or_else(new_request_id);

    let mut response = match next.call(request).await {
        Ok(output) => output.into_response(),
        Err(error) => error.into_response(),
    };

    tracing::info!(
        method = %method,
        path,
        status = response.status().as_u16(),
        latency_us = started.elapsed().as_micros() as u64,
        request_id = request_id.to_str().unwrap_or("<non-ascii>"),
        "request"
    );
    response.headers_mut().insert(REQUEST_ID, request_id);
    Ok(response)
}

fn new_request_id() -> HeaderValue {
    HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}
