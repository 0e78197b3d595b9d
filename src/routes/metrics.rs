//! `GET /metrics`: Prometheus (OpenMetrics) text of the server and the runtime.

use crate::metrics::CONTENT_TYPE;
use crate::state::AppState;
use actix_web::{web, HttpResponse};

/// Every metric, as text; the list is in docs/OPERATIONS.md.
#[utoipa::path(
    get, path = "/metrics", operation_id = "metrics", tag = "operators",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String))
)]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    state.metrics.refresh().await;
    HttpResponse::Ok()
        .content_type(CONTENT_TYPE)
        .body(state.metrics.render())
}

/// Registers `/metrics`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/metrics").route(web::get().to(metrics)));
}
