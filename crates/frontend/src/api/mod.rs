//! The HTTP surface: one module per route group, composed into one OpenAPI service.

mod connectivity;
mod private_service;
mod visits;

use std::sync::Arc;

use poem::Endpoint;
use poem_openapi::OpenApiService;
use service_kit::HealthApi;
use service_kit::upstream::Upstream;

use crate::config::Settings;
use crate::db::Database;

pub use connectivity::ConnectivityApi;
pub use private_service::PrivateServiceApi;
pub use visits::VisitsApi;

/// The routes, the OpenAPI document at `/openapi.json` and Swagger UI at `/docs`.
pub fn app(settings: &Settings, database: Option<Arc<Database>>) -> impl Endpoint + 'static {
    let apis = (
        VisitsApi::new(database.clone()),
        PrivateServiceApi::new(
            settings.private_service.clone(),
            Upstream::new(settings.private_service_timeout),
        ),
        ConnectivityApi::new(&settings.connection_test, database),
        HealthApi,
    );
    let api = OpenApiService::new(apis, "frontend", env!("CARGO_PKG_VERSION")).description(
        "Public API on App Runner reaching an Aurora PostgreSQL database and a private ECS service.",
    );
    service_kit::with_docs(api)
}
