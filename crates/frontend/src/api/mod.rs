//! The HTTP surface: one module per route group, composed into one OpenAPI service.

mod connectivity;
mod private_service;
mod visits;

use std::sync::Arc;

use poem::{Endpoint, EndpointExt, Route};
use poem_openapi::OpenApiService;
use service_kit::HealthApi;
use service_kit::upstream::Upstream;

use crate::config::Settings;
use crate::db::Database;

pub use connectivity::ConnectivityApi;
pub use private_service::PrivateServiceApi;
pub use visits::VisitsApi;

/// Everything the routes need, built once at start.
pub struct Dependencies {
    pub database: Option<Arc<Database>>,
}

/// The routes, the OpenAPI document at `/openapi.json` and Swagger UI at `/docs`.
pub fn app(settings: &Settings, dependencies: Dependencies) -> impl Endpoint + 'static {
    let apis = (
        VisitsApi::new(dependencies.database.clone()),
        PrivateServiceApi::new(
            settings.private_service.clone(),
            Upstream::new(settings.private_service_timeout),
        ),
        ConnectivityApi::new(&settings.connection_test, dependencies.database),
        HealthApi,
    );
    let api = OpenApiService::new(apis, "frontend", env!("CARGO_PKG_VERSION")).description(
        "Public API on App Runner reaching an Aurora PostgreSQL database and a private ECS service.",
    );
    let spec = api.spec_endpoint();
    let docs = api.swagger_ui();
    Route::new()
        .at("/openapi.json", spec)
        .nest("/docs", docs)
        .nest("/", api)
        .map_to_response()
}
