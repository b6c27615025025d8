use std::collections::BTreeMap;

use poem::http::StatusCode;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use service_kit::Problem;
use service_kit::upstream::Upstream;

pub struct PrivateServiceApi {
    /// Base URL, e.g. http://privateservice.apprunner.demo:8080; resolved again on every call.
    url: Option<String>,
    upstream: Upstream,
}

#[derive(Object)]
struct PrivateServiceAnswer {
    /// The private service's JSON answer, as it sent it.
    #[oai(rename = "Response")]
    response: BTreeMap<String, serde_json::Value>,
}

#[derive(ApiResponse)]
enum PrivateServiceResponse {
    #[oai(status = 200)]
    Ok(Json<PrivateServiceAnswer>),
    /// The private service is unreachable, failed, or did not answer with a JSON object.
    #[oai(status = 502, content_type = "application/problem+json")]
    BadGateway(Json<Problem>),
    /// ECSPRIVATESERVICE is not configured.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>),
    /// The private service did not answer in time.
    #[oai(status = 504, content_type = "application/problem+json")]
    GatewayTimeout(Json<Problem>),
}

#[OpenApi]
impl PrivateServiceApi {
    /// Calls the private ECS service inside the VPC and relays its answer.
    #[oai(path = "/ecs-private-service", method = "get")]
    async fn call(&self) -> PrivateServiceResponse {
        let Some(url) = self.url.clone() else {
            return PrivateServiceResponse::Unavailable(Json(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The private service is not configured: set ECSPRIVATESERVICE.",
            )));
        };
        let upstream = self.upstream.clone();
        let answer = tokio::task::spawn_blocking(move || upstream.get_json(&format!("{url}/"))).await;
        match answer {
            Ok(Ok(response)) => PrivateServiceResponse::Ok(Json(PrivateServiceAnswer { response })),
            Ok(Err(error)) => {
                tracing::warn!(%error, "private service call failed");
                let problem = error.to_problem("The private service");
                if problem.status == StatusCode::GATEWAY_TIMEOUT.as_u16() {
                    PrivateServiceResponse::GatewayTimeout(Json(problem))
                } else {
                    PrivateServiceResponse::BadGateway(Json(problem))
                }
            }
            Err(join_error) => {
                tracing::error!(%join_error, "private service call panicked");
                PrivateServiceResponse::BadGateway(Json(Problem::new(
                    StatusCode::BAD_GATEWAY,
                    "Calling the private service failed.",
                )))
            }
        }
    }
}

impl PrivateServiceApi {
    pub fn new(url: Option<String>, upstream: Upstream) -> Self {
        Self { url, upstream }
    }
}
