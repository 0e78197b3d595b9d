//! The API's doors. Routes hold no session state; they authenticate, validate and talk to the
//! runtime's actors.

mod health;
pub mod ws;

use crate::config::Config;
use crate::error;
use actix_web::web;

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig, config: &Config) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(config.limits.body_bytes)
            .error_handler(error::json_error),
    )
    .app_data(web::PayloadConfig::default().limit(config.limits.body_bytes))
    .app_data(web::QueryConfig::default().error_handler(error::query_error))
    .app_data(web::PathConfig::default().error_handler(error::path_error))
    .configure(health::configure)
    .configure(ws::configure);
}
