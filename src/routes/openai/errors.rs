//! Errors in OpenAI's shape, `{"error": {"message", "type", "code", "param"}}`, so OpenAI SDKs
//! raise their usual exception classes (they map on the HTTP status). Every `/v1` failure,
//! malformed JSON included, answers in this shape; `code` keeps Troupe's wire code.

use crate::error::{ApiError, ErrorCode};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde_json::{json, Value};
use std::fmt;
use troupe_actors::{ErrorInfo, Outcome, RuntimeError};

/// An error answered on the OpenAI-compatible routes.
#[derive(Debug, Clone)]
pub struct OpenAiError {
    /// The HTTP status; OpenAI SDKs pick their exception class from it.
    pub status: StatusCode,
    /// Human text.
    pub message: String,
    /// OpenAI's error `type` (`invalid_request_error`, `server_error`, …).
    pub kind: &'static str,
    /// Machine-readable code: OpenAI's where one exists (`invalid_api_key`,
    /// `model_not_found`), else Troupe's (`queue_full`, the turn's failure code).
    pub code: String,
    /// The request field at fault, when one is.
    pub param: Option<String>,
}

impl OpenAiError {
    /// An error with `status`, `code` and `message`; the type follows from the status.
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        let code = code.into();
        OpenAiError {
            status,
            message: message.into(),
            // OpenAI's own answer when spending is capped: 429 `insufficient_quota`.
            kind: if code == "budget_exceeded" {
                "insufficient_quota"
            } else {
                type_of(status)
            },
            code,
            param: None,
        }
    }

    /// Names the request field at fault.
    pub fn param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// 400 `invalid_request`.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 401 `invalid_api_key`.
    pub fn invalid_api_key() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "Incorrect API key provided: send a Troupe bearer token as `Authorization: Bearer …`.",
        )
    }

    /// 404 `model_not_found`.
    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!(
                "The model `{model}` does not exist: use a configured provider name or \
                 `provider/model` (see GET /v1/models)."
            ),
        )
        .param("model")
    }

    /// 404 `response_not_found`.
    pub fn response_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "response_not_found",
            format!("Response with id '{id}' not found."),
        )
    }

    /// The error a turn that did not succeed answers with: a provider failure is a 5xx with
    /// the turn's own error code; a turn stopped by someone else is a 409; a turn the server
    /// stopped (shutdown, crash) is a 503.
    pub fn from_outcome(outcome: Outcome, error: Option<&ErrorInfo>) -> Self {
        let detail = |fallback: &str| {
            error
                .map(|e| e.message.clone())
                .unwrap_or_else(|| fallback.to_string())
        };
        match outcome {
            Outcome::Success => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "a successful turn is not an error",
            ),
            Outcome::Failed | Outcome::Abandoned => {
                let code = error.map_or("turn_failed", |e| e.code.as_str());
                let status = match code {
                    // The server's own setup, not the request, is at fault.
                    "provider_unavailable"
                    | "missing_api_key"
                    | "executable_not_found"
                    | "untrusted_project"
                    | "provider_misconfigured" => StatusCode::SERVICE_UNAVAILABLE,
                    "turn_timeout" => StatusCode::GATEWAY_TIMEOUT,
                    "budget_exceeded" => StatusCode::TOO_MANY_REQUESTS,
                    _ => StatusCode::BAD_GATEWAY,
                };
                Self::new(status, code, detail("the provider failed"))
            }
            Outcome::Aborted => Self::new(
                StatusCode::CONFLICT,
                "turn_aborted",
                detail("the turn was aborted before it finished"),
            ),
            Outcome::Cancelled => Self::new(
                StatusCode::CONFLICT,
                "turn_cancelled",
                detail("the turn was cancelled while it waited in the queue"),
            ),
            Outcome::Interrupted => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "turn_interrupted",
                detail("the server stopped while the turn ran"),
            ),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "code": self.code,
                "param": self.param,
            }
        })
    }
}

/// OpenAI's error type for a status.
fn type_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 | 403 => "invalid_request_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    }
}

impl fmt::Display for OpenAiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for OpenAiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(self.body())
    }
}

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> Self {
        if e.code == ErrorCode::Unauthorized {
            return Self::invalid_api_key();
        }
        let mut error = Self::new(e.code.status(), e.code.as_str(), e.message);
        error.param = e
            .extra
            .get("field")
            .and_then(Value::as_str)
            .map(str::to_string);
        error
    }
}

impl From<RuntimeError> for OpenAiError {
    fn from(e: RuntimeError) -> Self {
        let param = match &e {
            RuntimeError::UnknownProvider(_) => Some("model"),
            RuntimeError::InvalidSessionKey(_) => Some("X-Session-Key"),
            _ => None,
        };
        let mut error = Self::from(ApiError::from(e));
        error.param = param.map(str::to_string).or(error.param);
        error
    }
}

/// Troupe's own extractor-error mapping, answered in OpenAI's shape.
fn reshape(error: actix_web::Error) -> actix_web::Error {
    match error.as_error::<ApiError>() {
        Some(api) => OpenAiError::from(api.clone()).into(),
        None => OpenAiError::invalid_request(error.to_string()).into(),
    }
}

/// Query-string errors for the `/v1` scope.
pub fn query_error(
    err: actix_web::error::QueryPayloadError,
    req: &HttpRequest,
) -> actix_web::Error {
    reshape(crate::error::query_error(err, req))
}

/// Path errors for the `/v1` scope.
pub fn path_error(err: actix_web::error::PathError, req: &HttpRequest) -> actix_web::Error {
    reshape(crate::error::path_error(err, req))
}

/// Unknown paths under `/v1`.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, OpenAiError> {
    Err(OpenAiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("Unknown request URL: {} {}", req.method(), req.path()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_of_the_servers_own_setup_is_503_and_others_502() {
        let status = |code: &str| {
            let info = ErrorInfo {
                code: code.into(),
                message: "m".into(),
            };
            OpenAiError::from_outcome(Outcome::Failed, Some(&info)).status
        };
        for code in [
            "missing_api_key",
            "executable_not_found",
            "untrusted_project",
            "provider_misconfigured",
        ] {
            assert_eq!(status(code), StatusCode::SERVICE_UNAVAILABLE, "{code}");
        }
        assert_eq!(status("prompt_too_long"), StatusCode::BAD_GATEWAY);
    }
}
