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
//! - [`openapi`]: `GET /v1/openapi.json`, the document of these routes; [`schema`]: the
//!   schemas of their answers.

mod chat;
mod errors;
mod models;
mod openapi;
mod response_events;
mod responses;
mod schema;
mod sessions;
pub(crate) mod turn;

pub use errors::OpenAiError;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;
use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use futures::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
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
            None => Err(OpenAiError::from(ApiError::state_missing())),
        };
        ready(result)
    }
}

/// A `/v1` JSON body: parsed by [`ApiJson`] (one door for every JSON body: objects only, the
/// size limit, the field's JSON path on a shape error), answered in OpenAI's shape with that
/// path as `param` (`"background": 1` → `"param": "background"`).
pub struct OpenAiJson<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for OpenAiJson<T> {
    type Error = OpenAiError;
    type Future = LocalBoxFuture<'static, Result<Self, OpenAiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = ApiJson::<T>::from_request(req, payload);
        Box::pin(async move {
            body.await
                .map(|ApiJson(value)| OpenAiJson(value))
                .map_err(OpenAiError::from)
        })
    }
}

/// Registers `/v1/...`, with extractor errors and unknown paths answered in OpenAI's shape.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v1")
            .app_data(web::QueryConfig::default().error_handler(errors::query_error))
            .app_data(web::PathConfig::default().error_handler(errors::path_error))
            .configure(chat::configure)
            .configure(responses::configure)
            .configure(models::configure)
            .configure(openapi::configure)
            .default_service(web::to(errors::not_found)),
    );
}
