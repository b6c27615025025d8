//! Liveness: `GET /health` answers without touching any dependency, so a paused database or a
//! slow upstream never makes the platform replace a healthy process.

use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

#[derive(Debug, Object)]
pub struct Health {
    #[oai(rename = "Status")]
    pub status: String,
}

pub struct HealthApi;

#[OpenApi]
impl HealthApi {
    /// Liveness probe for the platform's health check; calls no dependency.
    #[oai(path = "/health", method = "get")]
    async fn health(&self) -> Json<Health> {
        Json(Health {
            status: "Healthy".to_owned(),
        })
    }
}
