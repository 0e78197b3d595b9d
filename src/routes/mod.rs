//! The API's doors. Routes hold no session state; they authenticate, validate and talk to the
//! runtime's actors.
//!
//! - [`health`]: `/healthz`, `/readyz`; [`metrics`]: `/metrics`.
//! - Under `/api/v1`: [`sessions`] (CRUD), [`transfer`] (fork, export, import), [`agui`] (AG-UI runs), [`turns`] (send, list, cancel, promote),
//!   [`controls`] (abort, pause, resume, reset), [`events`] (page, SSE stream),
//!   [`providers`], [`usage`] (owners' usage per day), [`admin`] (actor table), [`openapi`]
//!   (the generated document).
//!
//! Every route is a `web::resource`, so a path answers a method it does not serve with 405 and
//! `Allow` (given its body by [`crate::error::method_not_allowed`]), never 404.

pub mod admin;
pub mod agui;
pub mod controls;
pub mod events;
pub mod health;
pub mod metrics;
pub mod openai;
pub mod openapi;
pub mod providers;
pub mod sessions;
pub mod transfer;
pub mod turns;
pub mod usage;
pub mod ws;

use crate::config::Config;
use crate::error::{self, ApiError, ErrorCode};
use actix_web::web;

/// The prefix of the REST API.
pub const API_PREFIX: &str = "/api/v1";

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig, config: &Config) {
    cfg.app_data(web::PayloadConfig::default().limit(config.limits.body_bytes))
        .app_data(web::QueryConfig::default().error_handler(error::query_error))
        .app_data(web::PathConfig::default().error_handler(error::path_error))
        .configure(health::configure)
        .configure(metrics::configure)
        .configure(crate::console::configure)
        .configure(openai::configure)
        // Before the /api/v1 scope, which would otherwise answer /api/v1/ws with 404.
        .configure(ws::configure)
        .service(
            web::scope(API_PREFIX)
                .configure(transfer::configure)
                .configure(agui::configure)
                .configure(sessions::configure)
                .configure(turns::configure)
                .configure(controls::configure)
                .configure(events::configure)
                .configure(providers::configure)
                .configure(usage::configure)
                .configure(admin::configure)
                .configure(openapi::configure),
        );
}

/// The answer for a path no route serves: 404 `not_found` in the usual error shape.
pub async fn not_found(req: actix_web::HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::new(
        ErrorCode::NotFound,
        format!("no route for {} {}", req.method(), req.path()),
    ))
}
