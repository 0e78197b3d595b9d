//! The API's one error type, mapped to an HTTP status and the JSON error body in one place:
//! `{"error": {"code", "message", …extra}}` with the codes of DESIGN.md §11.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::fmt;
use troupe_actors::RuntimeError;
use utoipa::ToSchema;

/// The wire codes of DESIGN.md §11, plus the two the router answers (`not_found`,
/// `method_not_allowed`). A closed set: every code has its status in [`ErrorCode::status`], so
/// no code can turn into an unplanned 500.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not JSON.
    InvalidJson,
    /// Valid JSON of the wrong shape, a bad query value, a malformed id.
    InvalidRequest,
    /// The body is over `limits.body_bytes`.
    PayloadTooLarge,
    /// No token, or an unknown one.
    Unauthorized,
    /// An admin endpoint with a non-admin token.
    Forbidden,
    /// No such session, or not the caller's.
    SessionNotFound,
    /// No such queued turn.
    TurnNotFound,
    /// No route for the path.
    NotFound,
    /// A known path with another method.
    MethodNotAllowed,
    /// `provider` is not configured.
    UnknownProvider,
    /// `key` is empty, too long or has control characters.
    InvalidSessionKey,
    /// `project` is not under a configured root.
    ProjectNotAllowed,
    /// Mode `reject` while a turn runs or waits.
    SessionBusy,
    /// The queue holds `runtime.max_queue` turns.
    QueueFull,
    /// The restart cap was exhausted.
    SessionFailed,
    /// The session is read-only.
    SessionArchived,
    /// An operation that needs a running turn found none.
    NotRunning,
    /// Cancelling or promoting the turn that runs.
    TurnRunning,
    /// No permission request of that id waits in the session.
    PermissionNotFound,
    /// The permission request was answered already, or ended with its attempt.
    PermissionResolved,
    /// A budget leaves nothing to spend (the owner's daily cap refuses new turns).
    BudgetExceeded,
    /// The provider cannot be used now.
    ProviderUnavailable,
    /// The store failed.
    StoreUnavailable,
    /// Another node of the cluster runs the session.
    OwnedElsewhere,
    /// A bug, or an actor that stopped answering; never bad input.
    Internal,
}

impl ErrorCode {
    /// The HTTP status of the code: the one place codes meet statuses.
    pub fn status(self) -> StatusCode {
        use ErrorCode::*;
        match self {
            InvalidJson | InvalidRequest | UnknownProvider | InvalidSessionKey
            | ProjectNotAllowed => StatusCode::BAD_REQUEST,
            Unauthorized => StatusCode::UNAUTHORIZED,
            Forbidden => StatusCode::FORBIDDEN,
            SessionNotFound | TurnNotFound | PermissionNotFound | NotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            SessionBusy | SessionFailed | SessionArchived | NotRunning | TurnRunning
            | PermissionResolved => StatusCode::CONFLICT,
            QueueFull | BudgetExceeded => StatusCode::TOO_MANY_REQUESTS,
            ProviderUnavailable | StoreUnavailable | OwnedElsewhere => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The wire text (`session_not_found`).
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            InvalidJson => "invalid_json",
            InvalidRequest => "invalid_request",
            PayloadTooLarge => "payload_too_large",
            Unauthorized => "unauthorized",
            Forbidden => "forbidden",
            SessionNotFound => "session_not_found",
            TurnNotFound => "turn_not_found",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            UnknownProvider => "unknown_provider",
            InvalidSessionKey => "invalid_session_key",
            ProjectNotAllowed => "project_not_allowed",
            SessionBusy => "session_busy",
            QueueFull => "queue_full",
            SessionFailed => "session_failed",
            SessionArchived => "session_archived",
            NotRunning => "not_running",
            TurnRunning => "turn_running",
            PermissionNotFound => "permission_not_found",
            PermissionResolved => "permission_resolved",
            BudgetExceeded => "budget_exceeded",
            ProviderUnavailable => "provider_unavailable",
            StoreUnavailable => "store_unavailable",
            OwnedElsewhere => "owned_elsewhere",
            Internal => "internal",
        }
    }

    /// The code of a runtime error, by variant (never by its text).
    pub fn of(e: &RuntimeError) -> ErrorCode {
        use ErrorCode::*;
        match e {
            RuntimeError::SessionNotFound => SessionNotFound,
            RuntimeError::TurnNotFound => TurnNotFound,
            RuntimeError::UnknownProvider(_) => UnknownProvider,
            RuntimeError::InvalidSessionKey(_) => InvalidSessionKey,
            RuntimeError::InvalidRequest(_) | RuntimeError::InvalidField { .. } => InvalidRequest,
            RuntimeError::SessionBusy => SessionBusy,
            RuntimeError::QueueFull { .. } => QueueFull,
            RuntimeError::SessionFailed => SessionFailed,
            RuntimeError::SessionArchived => SessionArchived,
            RuntimeError::NotRunning => NotRunning,
            RuntimeError::TurnRunning => TurnRunning,
            RuntimeError::PermissionNotFound => PermissionNotFound,
            RuntimeError::PermissionResolved => PermissionResolved,
            RuntimeError::BudgetExceeded(_) => BudgetExceeded,
            RuntimeError::ProviderUnavailable(_) => ProviderUnavailable,
            RuntimeError::Store(_) => StoreUnavailable,
            RuntimeError::OwnedElsewhere { .. } => OwnedElsewhere,
            RuntimeError::Internal(_) => Internal,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// An error answered to a client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The wire code; it alone decides the status.
    pub code: ErrorCode,
    /// Human text.
    pub message: String,
    /// Further fields of the error object (`field`, `max`, `check`, …).
    pub extra: Map<String, Value>,
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
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
        Self::new(ErrorCode::InvalidRequest, message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized() -> Self {
        Self::new(ErrorCode::Unauthorized, "a valid bearer token is required")
    }

    /// 403 `forbidden`.
    pub fn forbidden() -> Self {
        Self::new(ErrorCode::Forbidden, "this endpoint needs an admin token")
    }

    /// 404 `session_not_found`.
    pub fn session_not_found() -> Self {
        Self::new(ErrorCode::SessionNotFound, "session not found")
    }

    /// 500 `internal`: the application state is missing (never outside unit tests).
    pub fn state_missing() -> Self {
        Self::new(ErrorCode::Internal, "application state missing")
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
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(self.body())
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        let error = ApiError::new(ErrorCode::of(&e), e.to_string());
        match e {
            RuntimeError::QueueFull { max } => error.with("max", max),
            RuntimeError::UnknownProvider(name) => error.with("provider", name),
            RuntimeError::InvalidField { field, .. } => error.with("field", field),
            RuntimeError::OwnedElsewhere { node } => error.with("node", node),
            RuntimeError::Internal(_) | RuntimeError::Store(_) => {
                log::error!("request failed: {error}");
                error
            }
            _ => error,
        }
    }
}

/// Gives actix-web's bodiless 405 (a known path, another method) the usual error body, keeping
/// its `Allow` header; under `/v1` the body has OpenAI's shape. Every route is a
/// `web::resource`, so every path answers other methods here.
pub fn method_not_allowed<B>(
    res: actix_web::dev::ServiceResponse<B>,
) -> actix_web::Result<actix_web::middleware::ErrorHandlerResponse<B>> {
    let (req, res) = res.into_parts();
    let error = ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{} is not served on {}", req.method(), req.path()),
    );
    let mut answer = if req.path().starts_with("/v1/") {
        crate::routes::openai::OpenAiError::from(error).error_response()
    } else {
        error.error_response()
    };
    if let Some(allow) = res.headers().get(actix_web::http::header::ALLOW) {
        answer
            .headers_mut()
            .insert(actix_web::http::header::ALLOW, allow.clone());
    }
    let res = actix_web::dev::ServiceResponse::new(req, answer).map_into_right_body();
    Ok(actix_web::middleware::ErrorHandlerResponse::Response(res))
}

/// Maps query-string errors to `invalid_request`, naming the parameter when serde does.
pub fn query_error(
    err: actix_web::error::QueryPayloadError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    let text = err.to_string();
    let error = ApiError::invalid_request(format!("invalid query: {text}"));
    match backticked(&text).filter(|_| text.contains("field")) {
        Some(field) => error.with("field", field),
        None => error,
    }
    .into()
}

/// Maps path errors (a malformed id) to `invalid_request`.
pub fn path_error(
    err: actix_web::error::PathError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::invalid_request(format!("invalid path: {err}")).into()
}

/// The first text between backticks: serde names fields that way (`missing field `content``).
pub fn backticked(text: &str) -> Option<&str> {
    let mut parts = text.split('`');
    parts.next()?;
    parts.next()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code; the `match` makes adding a code without listing it here a compile error.
    fn all() -> Vec<ErrorCode> {
        use ErrorCode::*;
        let all = vec![
            InvalidJson,
            InvalidRequest,
            PayloadTooLarge,
            Unauthorized,
            Forbidden,
            SessionNotFound,
            TurnNotFound,
            NotFound,
            MethodNotAllowed,
            UnknownProvider,
            InvalidSessionKey,
            ProjectNotAllowed,
            SessionBusy,
            QueueFull,
            SessionFailed,
            SessionArchived,
            NotRunning,
            TurnRunning,
            PermissionNotFound,
            PermissionResolved,
            BudgetExceeded,
            ProviderUnavailable,
            StoreUnavailable,
            OwnedElsewhere,
            Internal,
        ];
        for code in &all {
            match code {
                InvalidJson | InvalidRequest | PayloadTooLarge | Unauthorized | Forbidden
                | SessionNotFound | TurnNotFound | NotFound | MethodNotAllowed
                | UnknownProvider | InvalidSessionKey | ProjectNotAllowed | SessionBusy
                | QueueFull | SessionFailed | SessionArchived | NotRunning | TurnRunning
                | PermissionNotFound | PermissionResolved | BudgetExceeded
                | ProviderUnavailable | StoreUnavailable | OwnedElsewhere | Internal => {}
            }
        }
        all
    }

    #[test]
    fn only_internal_is_a_500_and_the_wire_name_is_the_serialized_one() {
        for code in all() {
            assert_eq!(
                code.status() == StatusCode::INTERNAL_SERVER_ERROR,
                code == ErrorCode::Internal,
                "{code}"
            );
            assert_eq!(serde_json::to_value(code).unwrap(), json!(code.as_str()));
            let body = ApiError::new(code, "m").body();
            assert_eq!(body["error"]["code"], code.as_str());
        }
    }

    #[test]
    fn runtime_errors_map_by_variant() {
        let cases = [
            (RuntimeError::SessionNotFound, 404),
            (RuntimeError::QueueFull { max: 3 }, 429),
            (RuntimeError::BudgetExceeded("spent".into()), 429),
            (RuntimeError::UnknownProvider("x".into()), 400),
            (RuntimeError::SessionBusy, 409),
            (
                RuntimeError::OwnedElsewhere {
                    node: "node-b".into(),
                },
                503,
            ),
            (
                RuntimeError::Store(troupe_actors::store::StoreError::Engine("disk".into())),
                503,
            ),
            (RuntimeError::Internal("bug".into()), 500),
        ];
        for (error, status) in cases {
            let api = ApiError::from(error);
            assert_eq!(api.status_code().as_u16(), status, "{api}");
        }
    }
}
