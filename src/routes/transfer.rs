//! Sessions made from sessions: fork at a turn, export (JSON lines or Markdown), import.

mod format;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::extract::{ApiJson, OwnedSession};
use crate::routes::sessions::SessionBody;
use crate::schema::ErrorBodySchema;
use crate::state::AppState;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures::StreamExt;
use serde::Deserialize;
use troupe_actors::transfer::CopySpec;
use troupe_actors::TurnId;
use utoipa::{IntoParams, ToSchema};

pub use format::{FORMAT, VERSION};

/// `POST /sessions/{id}/fork`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"title": "Try the other way"}))]
pub struct ForkSession {
    /// Copy up to the end of this completed turn (default: the last completed turn).
    #[schema(value_type = Option<String>, format = Uuid)]
    pub at_turn_id: Option<TurnId>,
    /// A key for the fork in the caller's scope (the source's project); 1–256 bytes, no
    /// control characters, not naming another session.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub key: Option<String>,
    /// Its title (default: the source's).
    pub title: Option<String>,
}

/// `GET /sessions/{id}/export`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// `jsonl` (default: the file `POST /sessions/import` reads) or `markdown` (a transcript
    /// for people).
    #[param(value_type = Option<ExportFormat>, inline)]
    pub format: Option<ExportFormat>,
}

/// The form of an export.
#[derive(Clone, Copy, Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// JSON lines: the session line, then turns, then events.
    #[default]
    Jsonl,
    /// A Markdown transcript.
    Markdown,
}

/// `POST /sessions/import`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImportQuery {
    /// The provider of the new session (default: the export's); it must be configured.
    #[param(min_length = 1)]
    pub provider: Option<String>,
    /// Its key in the caller's scope.
    #[param(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub key: Option<String>,
    /// Its title (default: the export's).
    pub title: Option<String>,
    /// Its project (checked against the configured roots); default none.
    #[param(min_length = 1, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub project: Option<String>,
    /// Keep the export's provider session id, to resume the provider's own conversation
    /// (same provider, reachable from here); default: a fresh one.
    pub keep_provider_session: Option<bool>,
}

/// Forks a session at the end of a turn into a new session; the source is untouched.
#[utoipa::path(
    post, path = "/api/v1/sessions/{id}/fork", operation_id = "fork_session", tag = "sessions",
    params(("id" = uuid::Uuid, Path, description = "Session id")),
    request_body = ForkSession,
    responses(
        (status = 201, description = "The new session", body = SessionBody),
        (status = 400, description = "`invalid_json`, `invalid_request`, `invalid_session_key` (malformed, or naming another session)", body = ErrorBodySchema),
        (status = 401, description = "`unauthorized`", body = ErrorBodySchema),
        (status = 404, description = "`session_not_found`, `turn_not_found` (`at_turn_id` is not a completed turn of the session)", body = ErrorBodySchema),
        (status = 413, description = "`payload_too_large`", body = ErrorBodySchema),
    ),
    security(("bearer" = []))
)]
pub async fn fork(
    state: web::Data<AppState>,
    session: OwnedSession,
    ApiJson(body): ApiJson<ForkSession>,
) -> Result<HttpResponse, ApiError> {
    let source = session.handle.id();
    let spec = CopySpec {
        owner: session.caller.owner,
        key: body.key,
        title: body.title,
        ..CopySpec::default()
    };
    let session = state.runtime.fork(source, body.at_turn_id, spec).await?;
    log::info!("session {}: forked from {source} over REST", session.id);
    Ok(HttpResponse::Created().json(SessionBody { session }))
}

/// The session as a file: its record, turns and events as JSON lines, or a Markdown
/// transcript.
#[utoipa::path(
    get, path = "/api/v1/sessions/{id}/export", operation_id = "export_session", tag = "sessions",
    params(("id" = uuid::Uuid, Path, description = "Session id"), ExportQuery),
    responses(
        (status = 200, description = "The export", content(
            (String = "application/x-ndjson"),
            (String = "text/markdown"),
        )),
        (status = 400, description = "`invalid_request`", body = ErrorBodySchema),
        (status = 401, description = "`unauthorized`", body = ErrorBodySchema),
        (status = 404, description = "`session_not_found`", body = ErrorBodySchema),
    ),
    security(("bearer" = []))
)]
pub async fn export(
    state: web::Data<AppState>,
    session: OwnedSession,
    query: web::Query<ExportQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = session.handle.id();
    let copy = state.runtime.copy_of(&session.caller.owner, id).await?;
    let format = query.into_inner().format.unwrap_or_default();
    let (content_type, extension, body) = match format {
        ExportFormat::Jsonl => {
            let lines = format::jsonl(copy);
            let stream = futures::stream::iter(lines)
                .map(|line| Ok::<_, actix_web::Error>(web::Bytes::from(line)));
            (
                "application/x-ndjson",
                "jsonl",
                actix_web::body::BoxBody::new(actix_web::body::BodyStream::new(stream)),
            )
        }
        ExportFormat::Markdown => (
            "text/markdown; charset=utf-8",
            "md",
            actix_web::body::BoxBody::new(format::markdown(&copy)),
        ),
    };
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"session-{id}.{extension}\""),
        ))
        .body(body))
}

/// Makes a new session of the caller from an export (its turns that had completed).
#[utoipa::path(
    post, path = "/api/v1/sessions/import", operation_id = "import_session", tag = "sessions",
    params(ImportQuery),
    request_body(content = String, content_type = "application/x-ndjson",
        description = "A file of `GET /api/v1/sessions/{id}/export` (JSON lines)"),
    responses(
        (status = 201, description = "The new session", body = SessionBody),
        (status = 400, description = "`invalid_request` (not an export; `line` names the line at fault; wrong content type), `unknown_provider`, `invalid_session_key`, `project_not_allowed`", body = ErrorBodySchema),
        (status = 401, description = "`unauthorized`", body = ErrorBodySchema),
        (status = 413, description = "`payload_too_large` (beyond `limits.import_bytes`)", body = ErrorBodySchema),
    ),
    security(("bearer" = []))
)]
pub async fn import(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    query: web::Query<ImportQuery>,
    mut payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let project = query
        .project
        .as_deref()
        .map(|p| state.projects.check(p))
        .transpose()?;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if !["application/x-ndjson", "application/jsonl"]
        .iter()
        .any(|t| essence.eq_ignore_ascii_case(t))
    {
        return Err(
            ApiError::invalid_request("Content-Type must be application/x-ndjson")
                .with("field", "content-type"),
        );
    }
    let limit = state.config.limits.import_bytes;
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the export is larger than {limit} bytes"),
        )
        .with("limit", limit)
    };
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| match e {
            actix_web::error::PayloadError::Overflow => too_large(),
            other => ApiError::invalid_request(format!("could not read the body: {other}")),
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::invalid_request("the export is not UTF-8"))?;
    let copy = format::parse(text)?;
    let source = copy.record.id;
    let spec = CopySpec {
        owner: caller.owner,
        project,
        key: query.key,
        title: query.title,
        provider: query.provider,
        keep_provider_session: query.keep_provider_session.unwrap_or(false),
    };
    let session = state.runtime.import(copy, spec).await?;
    log::info!(
        "session {}: imported from an export of {source}",
        session.id
    );
    Ok(HttpResponse::Created().json(SessionBody { session }))
}

/// Registers the routes (inside `/api/v1`), before `/sessions/{id}` would take `import`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/sessions/import").route(web::post().to(import)))
        .service(web::resource("/sessions/{id}/fork").route(web::post().to(fork)))
        .service(web::resource("/sessions/{id}/export").route(web::get().to(export)));
}
