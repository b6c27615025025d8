use std::sync::Arc;

use poem::Endpoint;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi, OpenApiService};
use service_kit::upstream::Upstream;
use service_kit::{HealthApi, Problem};

use crate::Config;
use crate::metadata::{MetadataClient, TaskSummary};

struct Api {
    metadata: Arc<MetadataClient>,
}

#[derive(ApiResponse)]
enum TaskResponse {
    /// The summary of the task that answered.
    #[oai(status = 200)]
    Ok(Json<TaskSummary>),
    /// The metadata endpoint is unreachable, unset, or its answer lacks a field.
    #[oai(status = 502, content_type = "application/problem+json")]
    BadGateway(Json<Problem>),
    /// The metadata endpoint did not answer in time.
    #[oai(status = 504, content_type = "application/problem+json")]
    GatewayTimeout(Json<Problem>),
}

#[OpenApi]
impl Api {
    /// Summary of this ECS task: ARN, cluster, launch type, container name and IP address.
    #[oai(path = "/", method = "get")]
    async fn task(&self) -> TaskResponse {
        let metadata = Arc::clone(&self.metadata);
        match tokio::task::spawn_blocking(move || metadata.task_summary()).await {
            Ok(Ok(summary)) => TaskResponse::Ok(Json(summary)),
            Ok(Err(error)) => {
                tracing::warn!(%error, "task metadata unavailable");
                let problem = error.to_problem();
                if problem.status == 504 {
                    TaskResponse::GatewayTimeout(Json(problem))
                } else {
                    TaskResponse::BadGateway(Json(problem))
                }
            }
            Err(join_error) => {
                tracing::error!(%join_error, "metadata task failed");
                TaskResponse::BadGateway(Json(Problem::new(
                    poem::http::StatusCode::BAD_GATEWAY,
                    "Reading the task metadata failed.",
                )))
            }
        }
    }
}

/// The whole HTTP surface: the API, its OpenAPI document and Swagger UI.
pub fn app(config: &Config) -> impl Endpoint + 'static {
    let metadata = MetadataClient::new(
        config.metadata_uri.as_deref(),
        Upstream::new(config.metadata_timeout),
    );
    let api = OpenApiService::new(
        (
            Api {
                metadata: Arc::new(metadata),
            },
            HealthApi,
        ),
        "private-service",
        env!("CARGO_PKG_VERSION"),
    );
    service_kit::with_docs(api)
}
