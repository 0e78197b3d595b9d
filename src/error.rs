//! The API's one error type, mapped to an HTTP status and the JSON error body in one place:
//! `{"error": {"code", "message", …extra}}` with the codes of DESIGN.md §11.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Map, Value};
use std::fmt;
use troupe_actors::RuntimeError;

/// An error answered to a client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The wire code (`session_not_found`, `invalid_json`, …).
    pub code: &'static str,
    /// Human text.
    pub message: String,
    /// Further fields of the error object (`field`, `max`, `check`, …).
    pub extra: Map<String, Value>,
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            extra: Map::new(),
        }
    }

    /// Adds a field to the error object.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }

    /// 400 `invalid_request`, naming the field when known.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new("invalid_request", message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized() -> Self {
        Self::new("unauthorized", "a valid bearer token is required")
    }

    /// 403 `forbidden`.
    pub fn forbidden() -> Self {
        Self::new("forbidden", "this endpoint needs an admin token")
    }

    /// 404 `session_not_found`.
    pub fn session_not_found() -> Self {
        Self::new("session_not_found", "session not found")
    }

    /// The HTTP status of a code.
    pub fn status_of(code: &str) -> StatusCode {
        match code {
            "invalid_json"
            | "invalid_request"
            | "unknown_provider"
            | "invalid_session_key"
            | "project_not_allowed" => StatusCode::BAD_REQUEST,
            "unauthorized" => StatusCode::UNAUTHORIZED,
            "forbidden" => StatusCode::FORBIDDEN,
            "session_not_found" | "turn_not_found" | "not_found" => StatusCode::NOT_FOUND,
            "method_not_allowed" => StatusCode::METHOD_NOT_ALLOWED,
            "payload_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
            "session_busy" | "session_failed" | "session_archived" | "not_running"
            | "turn_running" => StatusCode::CONFLICT,
            "queue_full" => StatusCode::TOO_MANY_REQUESTS,
            "provider_unavailable" | "store_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut error = self.extra.clone();
        error.insert("code".into(), json!(self.code));
        error.insert("message".into(), json!(self.message));
        json!({ "error": error })
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        Self::status_of(self.code)
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(self.body())
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        let error = ApiError::new(e.code(), e.to_string());
        match e {
            RuntimeError::QueueFull { max } => error.with("max", max),
            RuntimeError::UnknownProvider(name) => error.with("provider", name),
            RuntimeError::InvalidField { field, .. } => error.with("field", field),
            RuntimeError::Internal(_) | RuntimeError::Store(_) => {
                log::error!("request failed: {error}");
                error
            }
            _ => error,
        }
    }
}

/// Gives actix-web's bodiless 405 (a known path, another method) the usual error body.
pub fn method_not_allowed<B>(
    res: actix_web::dev::ServiceResponse<B>,
) -> actix_web::Result<actix_web::middleware::ErrorHandlerResponse<B>> {
    let (req, res) = res.into_parts();
    let error = ApiError::new(
        "method_not_allowed",
        format!("{} is not served on {}", req.method(), req.path()),
    );
    let mut answer = error.error_response();
    if let Some(allow) = res.headers().get(actix_web::http::header::ALLOW) {
        answer
            .headers_mut()
            .insert(actix_web::http::header::ALLOW, allow.clone());
    }
    let res = actix_web::dev::ServiceResponse::new(req, answer).map_into_right_body();
    Ok(actix_web::middleware::ErrorHandlerResponse::Response(res))
}

/// Maps actix-web's JSON extractor errors: syntax → `invalid_json`, shape → `invalid_request`
/// naming the field, size → `payload_too_large`.
pub fn json_error(
    err: actix_web::error::JsonPayloadError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as J;
    let api = match &err {
        J::OverflowKnownLength { .. } | J::Overflow { .. } => {
            ApiError::new("payload_too_large", "request body is too large")
        }
        J::ContentType => ApiError::invalid_request("Content-Type must be application/json"),
        J::Deserialize(e) if e.is_syntax() || e.is_eof() => {
            ApiError::new("invalid_json", format!("malformed JSON: {e}"))
        }
        J::Deserialize(e) => ApiError::invalid_request(format!("invalid request: {e}"))
            .with("field", field_of(&e.to_string())),
        J::Payload(actix_web::error::PayloadError::Overflow) => {
            ApiError::new("payload_too_large", "request body is too large")
        }
        other => ApiError::invalid_request(other.to_string()),
    };
    api.into()
}

/// Maps query-string errors to `invalid_request`.
pub fn query_error(
    err: actix_web::error::QueryPayloadError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::invalid_request(format!("invalid query: {err}")).into()
}

/// Maps path errors (a malformed id) to `invalid_request`.
pub fn path_error(
    err: actix_web::error::PathError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::invalid_request(format!("invalid path: {err}")).into()
}

/// The field serde named in its message (`missing field `content``, `unknown field `x``).
fn field_of(message: &str) -> Value {
    let mut parts = message.split('`');
    match (parts.next(), parts.next()) {
        (Some(_), Some(field)) => json!(field),
        _ => Value::Null,
    }
}
