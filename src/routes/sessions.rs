//! Sessions: create (or find by key), list, read, rename or archive, delete.

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiJson, OwnedSession};
use crate::schema::{BudgetSchema, ErrorBodySchema, SessionSchema, SessionStateSchema};
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use troupe_actors::session::UpdateSession;
use troupe_actors::{Budget, NewSession, SessionFilter, SessionId, SessionState, SessionView};
use utoipa::{IntoParams, ToSchema};

/// The largest page of `GET /sessions`.
pub const MAX_SESSIONS_PAGE: usize = 1000;
/// The page size of `GET /sessions` when `limit` is not given.
pub const DEFAULT_SESSIONS_PAGE: usize = 100;

/// `POST /sessions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"provider": "echo", "key": "demo", "title": "Demo"}))]
pub struct CreateSession {
    /// A configured provider (`GET /api/v1/providers`); the served document lists them.
    #[schema(min_length = 1)]
    pub provider: String,
    /// Working directory (checked against the configured roots) or free label; no control
    /// characters.
    #[schema(min_length = 1, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub project: Option<String>,
    /// Names the session within (owner, project): the same key finds the same session.
    /// 1–256 bytes of UTF-8, no control characters.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub key: Option<String>,
    /// Human title (ignored when the key names an existing session).
    pub title: Option<String>,
    /// The provider's model.
    pub model: Option<String>,
}

/// The answer to `POST /sessions`.
#[derive(Serialize, ToSchema)]
pub struct SessionCreated {
    /// The session.
    #[schema(value_type = SessionSchema)]
    pub session: SessionView,
    /// True when this call created it; false when the key named an existing one.
    pub created: bool,
}

/// `{session}`: the answer of reads and changes of one session.
#[derive(Serialize, ToSchema)]
pub struct SessionBody {
    /// The session.
    #[schema(value_type = SessionSchema)]
    pub session: SessionView,
}

/// A page of `GET /sessions`.
#[derive(Serialize, ToSchema)]
pub struct SessionPage {
    /// The caller's sessions, oldest first.
    #[schema(value_type = Vec<SessionSchema>)]
    pub sessions: Vec<SessionView>,
    /// Pass as `after` for the next page; null on the last page.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub next_after: Option<SessionId>,
}

/// Filters and paging of `GET /sessions`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListSessions {
    /// Only this project (resolved like `POST /sessions` does).
    #[param(min_length = 1, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub project: Option<String>,
    /// Only this provider.
    pub provider: Option<String>,
    /// Only sessions in this state.
    #[param(value_type = Option<SessionStateSchema>)]
    pub state: Option<SessionState>,
    /// Page size, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// The `next_after` of the previous page.
    #[param(value_type = Option<String>, format = Uuid)]
    pub after: Option<SessionId>,
}

/// `PATCH /sessions/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchSession {
    /// New title.
    pub title: Option<String>,
    /// Archive (true: aborts the running turn, cancels the queue, read-only) or unarchive.
    pub archived: Option<bool>,
    /// The model from the next attempt on (`session.updated` reason `model_changed`).
    #[schema(min_length = 1)]
    pub model: Option<String>,
    /// Another configured provider from the next attempt on (`provider_changed`): stateless
    /// ones get the history from the log, others a fresh conversation seeded with a
    /// transcript. Clears the model unless `model` is given too.
    #[schema(min_length = 1)]
    pub provider: Option<String>,
    /// The session's own budget (null: back to the configured one). Above the configured
    /// budget only with an admin token; a held queue runs again once the budget leaves
    /// something to spend.
    #[serde(default, deserialize_with = "crate::routes::usage::present")]
    #[schema(value_type = Option<BudgetSchema>)]
    pub budget: Option<Option<Budget>>,
}

/// Creates a session, or finds the one `key` names in the caller's scope.
#[utoipa::path(
    post, path = "/api/v1/sessions", operation_id = "create_session", tag = "sessions",
    request_body = CreateSession,
    responses(
        (status = 201, description = "Created", body = SessionCreated, links(
            ("GetSession" = (operation_id = "get_session", parameters(("id" = "$response.body#/session/id")))),
            ("UpdateSession" = (operation_id = "update_session", parameters(("id" = "$response.body#/session/id")))),
            ("SendTurn" = (operation_id = "send_turn", parameters(("id" = "$response.body#/session/id")))),
            ("ListTurns" = (operation_id = "list_turns", parameters(("id" = "$response.body#/session/id")))),
            ("ListEvents" = (operation_id = "list_events", parameters(("id" = "$response.body#/session/id")))),
            ("AbortSession" = (operation_id = "abort_session", parameters(("id" = "$response.body#/session/id")))),
            ("PauseSession" = (operation_id = "pause_session", parameters(("id" = "$response.body#/session/id")))),
            ("ResumeSession" = (operation_id = "resume_session", parameters(("id" = "$response.body#/session/id")))),
            ("ResetSession" = (operation_id = "reset_session", parameters(("id" = "$response.body#/session/id")))),
            ("DeleteSession" = (operation_id = "delete_session", parameters(("id" = "$response.body#/session/id")))),
        )),
        (status = 200, description = "The key names an existing session", body = SessionCreated),
        (status = 400, description = "`invalid_json`, `invalid_request`, `unknown_provider`, `invalid_session_key`, `project_not_allowed`", body = ErrorBodySchema),
        (status = 401, description = "`unauthorized`", body = ErrorBodySchema),
        (status = 413, description = "`payload_too_large`", body = ErrorBodySchema),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateSession>,
) -> Result<HttpResponse, ApiError> {
    let project = body
        .project
        .as_deref()
        .map(|p| state.projects.check(p))
        .transpose()?;
    let (_, session, created) = state
        .runtime
        .get_or_create_view(NewSession {
            owner: caller.owner,
            project,
            key: body.key,
            provider: body.provider,
            title: body.title,
            model: body.model,
            hidden: false,
        })
        .await?;
    if created {
        log::debug!("session {}: created over REST", session.id);
    }
    let answer = SessionCreated { session, created };
    Ok(if created {
        HttpResponse::Created().json(answer)
    } else {
        HttpResponse::Ok().json(answer)
    })
}

/// The caller's sessions, oldest first, filtered and paged.
#[utoipa::path(
    get, path = "/api/v1/sessions", operation_id = "list_sessions", tag = "sessions",
    params(ListSessions),
    responses(
        (status = 200, description = "A page", body = SessionPage),
        (status = 400, description = "`invalid_request` (a bad filter or limit), `project_not_allowed`", body = ErrorBodySchema),
        (status = 401, description = "`unauthorized`", body = ErrorBodySchema),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ListSessions>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let limit = query.limit.unwrap_or(DEFAULT_SESSIONS_PAGE);
    if !(1..=MAX_SESSIONS_PAGE).contains(&limit) {
        return Err(ApiError::invalid_request(format!(
            "`limit` must be between 1 and {MAX_SESSIONS_PAGE}"
        ))
        .with("field", "limit"));
    }
    let project = query
        .project
        .as_deref()
        .map(|p| state.projects.check(p))
        .transpose()?;
    let filter = SessionFilter {
        project,
        provider: query.provider,
        state: query.state,
        limit: Some(limit),
        after: query.after,
    };
    let sessions = state.runtime.list_sessions(&caller.owner, &filter).await?;
    let next_after = (sessions.len() == limit)
        .then(|| sessions.last().map(|s| s.id))
        .flatten();
    Ok(HttpResponse::Ok().json(SessionPage {
        sessions,
        next_after,
    }))
}

/// One session.
#[utoipa::path(
    get, path = "/api/v1/sessions/{id}", operation_id = "get_session", tag = "sessions",
    params(("id" = uuid::Uuid, Path, description = "Session id")),
    responses(
        (status = 200, description = "The session", body = SessionBody),
        (status = 400, description = "`invalid_request`: the id is not a UUID", body = ErrorBodySchema),
        (status = 401, description = "`unauthorized`", body = ErrorBodySchema),
        (status = 404, description = "`session_not_found` (also for another owner's session)", body = ErrorBodySchema),
    ),
    security(("bearer" = []))
)]
pub async fn get(session: OwnedSession) -> Result<HttpResponse, ApiError> {
    let session = session.handle.info().await?;
    Ok(HttpResponse::Ok().json(SessionBody { session }))
}

/// Renames, archives or unarchives a session, or switches its model or provider.
#[utoipa::path(
    patch, path = "/api/v1/sessions/{id}", operation_id = "update_session", tag = "sessions",
    params(("id" = uuid::Uuid, Path, description = "Session id")),
    request_body = PatchSession,
    responses(
        (status = 200, description = "The session after the change", body = SessionBody),
        (status = 400, description = "`invalid_json`, `invalid_request`, `unknown_provider`", body = ErrorBodySchema),
        (status = 401, description = "`unauthorized`", body = ErrorBodySchema),
        (status = 403, description = "`forbidden`: a budget above the configured one without an admin token", body = ErrorBodySchema),
        (status = 404, description = "`session_not_found`", body = ErrorBodySchema),
        (status = 409, description = "`session_archived`: renaming, switching or budgeting an archived session (a refused body changes nothing)", body = ErrorBodySchema),
    ),
    security(("bearer" = []))
)]
pub async fn patch(
    state: web::Data<AppState>,
    session: OwnedSession,
    ApiJson(body): ApiJson<PatchSession>,
) -> Result<HttpResponse, ApiError> {
    for (field, value) in [("model", &body.model), ("provider", &body.provider)] {
        if value.as_deref() == Some("") {
            return Err(
                ApiError::invalid_request(format!("`{field}` must not be empty"))
                    .with("field", field),
            );
        }
    }
    if let Some(Some(budget)) = &body.budget {
        crate::routes::usage::check_budget(&state, &session, budget).await?;
    }
    let session = session
        .handle
        .update(UpdateSession {
            title: body.title,
            archived: body.archived,
            project: None,
            model: body.model,
            provider: body.provider,
            budget: body.budget,
        })
        .await?;
    Ok(HttpResponse::Ok().json(SessionBody { session }))
}

/// Deletes a session: aborts its running turn, cancels its queue, deletes its log.
#[utoipa::path(
    delete, path = "/api/v1/sessions/{id}", operation_id = "delete_session", tag = "sessions",
    params(("id" = uuid::Uuid, Path, description = "Session id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "`invalid_request`", body = ErrorBodySchema),
        (status = 401, description = "`unauthorized`", body = ErrorBodySchema),
        (status = 404, description = "`session_not_found`", body = ErrorBodySchema),
    ),
    security(("bearer" = []))
)]
pub async fn delete(session: OwnedSession) -> Result<HttpResponse, ApiError> {
    let id = session.handle.id();
    session.handle.delete().await?;
    log::info!("session {id}: deleted over REST");
    Ok(HttpResponse::NoContent().finish())
}

/// Registers the session routes (inside `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/sessions")
            .route(web::post().to(create))
            .route(web::get().to(list)),
    )
    .service(
        web::resource("/sessions/{id}")
            .route(web::get().to(get))
            .route(web::patch().to(patch))
            .route(web::delete().to(delete)),
    );
}
