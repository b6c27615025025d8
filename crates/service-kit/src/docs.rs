//! The one layout both services publish: the API at `/`, its OpenAPI document at
//! `/openapi.json` and Swagger UI at `/docs`.

use poem::{Endpoint, EndpointExt, Route};
use poem_openapi::{OpenApi, OpenApiService, Webhook};

pub fn with_docs<T, W>(api: OpenApiService<T, W>) -> impl Endpoint + 'static
where
    T: OpenApi + 'static,
    W: Webhook + 'static,
{
    let spec = api.spec_endpoint();
    let docs = api.swagger_ui();
    Route::new()
        .at("/openapi.json", spec)
        .nest("/docs", docs)
        .nest("/", api)
        .map_to_response()
}
