//! The OpenAI-compatible doors at the root (`/v1/...`), so OpenAI SDKs, LangChain, chat UIs and
//! curl use Troupe as a drop-in endpoint with durable sessions (DESIGN.md §11; docs/PROTOCOL.md, "OpenAI-compatible endpoints").
//!
//! # Layout
//! - [`chat`]: `POST /v1/chat/completions`, streamed or not.
//! - [`responses`]: `POST /v1/responses`, `GET /v1/responses/{id}` (with a resumable stream),
//!   `POST /v1/responses/{id}/cancel`.
//! - [`response_events`]: the Responses API's events and object, derived from a turn's events.
//! - [`models`]: `GET /v1/models`, `GET /v1/models/{id}`, and what a request's `model` names.
//! - [`sessions`]: which session a request runs in (session key, `user`, previous response, or a
//!   hidden one-off session) and what its messages become (turn, system prompt, history).
//! - [`turn`]: following one turn through its session's event log, and stopping it when the
//!   client goes away and asked for that.
//! - [`errors`]: errors in OpenAI's shape.

mod chat;
mod errors;
mod models;
mod response_events;
mod responses;
mod sessions;
mod turn;

pub use errors::OpenAiError;

use crate::auth::Caller;
use crate::config::Config;
use crate::state::AppState;
use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use std::future::{ready, Ready};

/// The authenticated caller of a `/v1` route; a missing or wrong token answers 401
/// `invalid_api_key` in OpenAI's shape. Listed first among a handler's arguments, so a bad
/// token is reported before a bad body.
pub struct OpenAiCaller(pub Caller);

impl FromRequest for OpenAiCaller {
    type Error = OpenAiError;
    type Future = Ready<Result<OpenAiCaller, OpenAiError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let result = match req.app_data::<web::Data<AppState>>() {
            Some(state) => state
                .auth
                .authenticate(req)
                .map(OpenAiCaller)
                .map_err(OpenAiError::from),
            None => Err(OpenAiError::from(crate::error::ApiError::new(
                "internal",
                "application state missing",
            ))),
        };
        ready(result)
    }
}

/// Registers `/v1/...`, with extractor errors and unknown paths answered in OpenAI's shape.
pub fn configure(cfg: &mut web::ServiceConfig, config: &Config) {
    cfg.service(
        web::scope("/v1")
            .app_data(
                web::JsonConfig::default()
                    .limit(config.limits.body_bytes)
                    .error_handler(errors::json_error),
            )
            .app_data(web::QueryConfig::default().error_handler(errors::query_error))
            .app_data(web::PathConfig::default().error_handler(errors::path_error))
            .configure(chat::configure)
            .configure(responses::configure)
            .configure(models::configure)
            .default_service(web::to(errors::not_found)),
    );
}
