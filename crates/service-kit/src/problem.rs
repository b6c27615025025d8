//! RFC 9457 problem details: the one error body both services send.

use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::Object;

pub const CONTENT_TYPE: &str = "application/problem+json";

/// An RFC 9457 problem. `detail` is written for the client: never a secret, never a driver's
/// error text (those go to the log).
#[derive(Debug, Clone, Object)]
pub struct Problem {
    /// A URI identifying the problem type; `about:blank` means the status says it all.
    #[oai(rename = "type")]
    pub problem_type: String,
    /// Short summary of the problem type (the status reason phrase).
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong in this occurrence, for a human.
    pub detail: String,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            problem_type: "about:blank".to_owned(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
        }
    }

    pub fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({
            "type": self.problem_type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        });
        poem::web::Json(body)
            .with_status(status)
            .with_content_type(CONTENT_TYPE)
            .into_response()
    }
}

/// What a 405 lists in `Allow`: every route of both services is a GET (HEAD is served by it).
pub const ALLOWED_METHODS: &str = "GET, HEAD";

/// Turns every error poem itself produces (unknown route, wrong method, unparsable request) into
/// a problem response, so clients see one error format whatever failed.
pub async fn from_poem_error(error: poem::Error) -> Response {
    let status = error.status();
    let detail = if status.is_server_error() {
        tracing::error!(%error, "unhandled error");
        "The server could not handle this request.".to_owned()
    } else {
        error.to_string()
    };
    let mut response = Problem::new(status, detail).into_response();
    if status == StatusCode::METHOD_NOT_ALLOWED {
        // RFC 9110 section 15.5.6: a 405 must say which methods the resource supports.
        response.headers_mut().insert(
            poem::http::header::ALLOW,
            poem::http::HeaderValue::from_static(ALLOWED_METHODS),
        );
    }
    response
}
