//! Liveness: `GET /healthz` answers 200 while the process serves.

use actix_web::{web, HttpResponse};
use serde_json::json;

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Registers `/healthz`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz));
}
