//! Request extractors that turn bad input into the API's error codes, never a 500:
//! [`ApiJson`] (a JSON body with the size limit, `invalid_json`, and `invalid_request` naming the
//! field) and [`OwnedSession`] (the caller's session named by the `{id}` path segment).

use crate::auth::Caller;
use crate::error::{backticked, ApiError, ErrorCode};
use crate::state::AppState;
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use futures::future::LocalBoxFuture;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::str::FromStr;
use troupe_actors::{SessionHandle, SessionId};

/// The body limit when the application state is missing (it never is outside unit tests).
const FALLBACK_BODY_LIMIT: usize = 1024 * 1024;

/// A JSON request body of type `T`.
///
/// Unlike `web::Json`, a wrong type or a missing field is reported with the JSON path of the
/// field (`{"code": "invalid_request", "field": "mode"}`), and the body must be declared
/// `application/json` (or `…+json`): a browser cannot send that cross-origin without a CORS
/// preflight, which keeps web pages from driving a token-less loopback server.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for ApiJson<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req
            .app_data::<web::Data<AppState>>()
            .map(|s| s.config.limits.body_bytes)
            .unwrap_or(FALLBACK_BODY_LIMIT);
        let content_type = content_type_error(req);
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            if declared.is_some_and(|len| len > limit) {
                return Err(too_large(limit));
            }
            if let Some(error) = content_type {
                return Err(error);
            }
            let mut body = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|e| match e {
                    actix_web::error::PayloadError::Overflow => too_large(limit),
                    other => ApiError::invalid_request(format!("could not read the body: {other}")),
                })?;
                if body.len() + chunk.len() > limit {
                    return Err(too_large(limit));
                }
                body.extend_from_slice(&chunk);
            }
            parse_json(&body).map(ApiJson)
        })
    }
}

/// 413 `payload_too_large` with the limit.
fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("request body is larger than {limit} bytes"),
    )
    .with("limit", limit)
}

/// `None` when the request declares a JSON body.
fn content_type_error(req: &HttpRequest) -> Option<ApiError> {
    let value = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = value.split(';').next().unwrap_or_default().trim();
    let json = essence.eq_ignore_ascii_case("application/json")
        || essence.to_ascii_lowercase().ends_with("+json");
    (!json).then(|| {
        ApiError::invalid_request("Content-Type must be application/json")
            .with("field", "content-type")
    })
}

/// Parses `body` as `T`. Every request body of the API is a JSON object: valid JSON of another
/// shape (`[null, null]`, `"x"`, `3`) is `invalid_request`, never read into a struct field by
/// field; syntax errors are `invalid_json`; shape errors `invalid_request` with the field's
/// JSON path.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => ApiError::invalid_request("the body must be a JSON object")
                    .with("field", Value::Null),
                Err(e) => json_error(&e, "."),
            },
        );
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        json_error(&e.into_inner(), &path)
    })?;
    de.end().map_err(|e| json_error(&e, "."))?;
    Ok(value)
}

fn json_error(e: &serde_json::Error, path: &str) -> ApiError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof => {
            ApiError::new(ErrorCode::InvalidJson, format!("malformed JSON: {e}"))
        }
        Category::Data | Category::Io => {
            let text = e.to_string();
            // serde names a missing or unknown field in backticks at the parent's path.
            let field = if path == "." {
                backticked(&text)
                    .filter(|_| text.contains("field"))
                    .map(Value::from)
                    .unwrap_or(Value::Null)
            } else {
                Value::from(path)
            };
            let message = match field.as_str() {
                Some(f) if path != "." => format!("invalid `{f}`: {text}"),
                _ => format!("invalid request: {text}"),
            };
            ApiError::invalid_request(message).with("field", field)
        }
    }
}

/// Parses an id from a path segment; 400 `invalid_request` naming `field` when malformed.
/// Only the hyphenated form (`format: uuid` in the document) is an id.
pub fn parse_id<T: FromStr>(raw: &str, field: &str) -> Result<T, ApiError> {
    let hyphenated = raw.len() == 36;
    hyphenated
        .then(|| raw.parse().ok())
        .flatten()
        .ok_or_else(|| {
            ApiError::invalid_request(format!("`{field}` must be a UUID, got `{raw}`"))
                .with("field", field)
        })
}

/// The caller's session named by the `{id}` segment of the path.
///
/// Checks run in a fixed order: the token (401 `unauthorized`), the id's form (400
/// `invalid_request`), then ownership: a session of another owner is 404 `session_not_found`,
/// exactly like one that does not exist, so its existence never leaks.
pub struct OwnedSession {
    /// Who asked.
    pub caller: Caller,
    /// The session, activated on first use.
    pub handle: SessionHandle,
}

impl FromRequest for OwnedSession {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { owned_session(&req, false).await })
    }
}

/// The caller's session for a streaming door (the SSE event stream): like [`OwnedSession`], but
/// the token may also come as `?access_token=` ([`crate::auth::Auth::authenticate_stream`]).
pub struct StreamedSession(pub OwnedSession);

impl FromRequest for StreamedSession {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { owned_session(&req, true).await.map(StreamedSession) })
    }
}

async fn owned_session(req: &HttpRequest, streaming: bool) -> Result<OwnedSession, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(ApiError::state_missing)?;
    let caller = if streaming {
        state.auth.authenticate_stream(req)?
    } else {
        state.auth.authenticate(req)?
    };
    let raw = req.match_info().get("id").unwrap_or_default();
    let id: SessionId = parse_id(raw, "session_id")?;
    let handle = state.runtime.session_of(&caller.owner, id).await?;
    Ok(OwnedSession { caller, handle })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        content: String,
        mode: Option<troupe_actors::BusyMode>,
    }

    fn error_of(body: &str) -> (String, Value) {
        let e = parse_json::<Body>(body.as_bytes()).unwrap_err();
        (
            e.code.to_string(),
            e.extra.get("field").cloned().unwrap_or(Value::Null),
        )
    }

    #[test]
    fn shape_errors_name_the_field() {
        assert_eq!(
            error_of(r#"{"content": 5}"#),
            ("invalid_request".into(), "content".into())
        );
        assert_eq!(
            error_of(r#"{}"#),
            ("invalid_request".into(), "content".into())
        );
        assert_eq!(
            error_of(r#"{"content": "x", "mode": "later"}"#),
            ("invalid_request".into(), "mode".into())
        );
        assert_eq!(
            error_of(r#"{"content": "x", "colour": 1}"#),
            ("invalid_request".into(), "colour".into())
        );
        assert_eq!(error_of("[1]"), ("invalid_request".into(), Value::Null));
        assert_eq!(
            error_of("[null, null, null]"),
            ("invalid_request".into(), Value::Null)
        );
        assert_eq!(
            error_of(r#""text""#),
            ("invalid_request".into(), Value::Null)
        );
    }

    #[test]
    fn syntax_errors_are_invalid_json() {
        assert_eq!(error_of("{").0, "invalid_json");
        assert_eq!(error_of("[1,").0, "invalid_json");
        assert_eq!(error_of("").0, "invalid_json");
        assert_eq!(error_of(r#"{"content": "x"} trailing"#).0, "invalid_json");
    }
}
