//! Probes: `GET /healthz` answers 200 while the process serves; `GET /readyz` answers 200 only
//! when a store write and a registry round trip both succeed in time, else 503 naming the check.

use crate::state::AppState;
use actix_web::{web, HttpResponse};
use serde::Serialize;
use std::time::Duration;
use utoipa::ToSchema;

/// The answer of the probes.
#[derive(Serialize, ToSchema)]
pub struct Probe {
    /// `ok` (healthz), `ready` or `not_ready` (readyz).
    pub status: &'static str,
    /// The failing check (`store` or `registry`), when not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<&'static str>,
    /// What failed, when not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Liveness.
#[utoipa::path(
    get, path = "/healthz", operation_id = "healthz", tag = "operators",
    responses((status = 200, description = "The process serves", body = Probe))
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Probe {
        status: "ok",
        check: None,
        message: None,
    })
}

/// Readiness: a store write and a registry round trip, each within `http.ready_timeout_ms`.
#[utoipa::path(
    get, path = "/readyz", operation_id = "readyz", tag = "operators",
    responses(
        (status = 200, description = "Ready", body = Probe),
        (status = 503, description = "Not ready; `check` names what failed", body = Probe),
    )
)]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let timeout = Duration::from_millis(state.config.http.ready_timeout_ms.max(1));
    match state.runtime.check_ready(timeout).await {
        Ok(()) => HttpResponse::Ok().json(Probe {
            status: "ready",
            check: None,
            message: None,
        }),
        Err((check, message)) => {
            log::warn!("readiness check `{check}` failed: {message}");
            HttpResponse::ServiceUnavailable().json(Probe {
                status: "not_ready",
                check: Some(check),
                message: Some(message),
            })
        }
    }
}

/// Registers `/healthz` and `/readyz`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/healthz").route(web::get().to(healthz)))
        .service(web::resource("/readyz").route(web::get().to(readyz)));
}
