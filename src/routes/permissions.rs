//! Tool-permission answers (DESIGN.md §12): `POST /sessions/{id}/permissions/{request_id}`
//! answers a `permission.requested` of the running turn with one of its options.

use crate::error::{ApiError, ErrorCode};
use crate::extract::{parse_id, ApiJson, OwnedSession};
use crate::schema::ErrorBodySchema;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use troupe_actors::PermissionResolution;
use utoipa::ToSchema;

/// `POST /sessions/{id}/permissions/{request_id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PermissionReplyBody {
    /// One of the `options[].id` of the request.
    #[schema(min_length = 1)]
    pub option_id: String,
}

/// What `permission.resolved` says.
#[derive(Serialize, ToSchema)]
pub struct PermissionResolved {
    /// The request.
    pub request_id: String,
    /// The option chosen.
    pub option_id: String,
    /// Who answered (the caller's owner).
    pub by: String,
}

impl From<PermissionResolution> for PermissionResolved {
    fn from(r: PermissionResolution) -> Self {
        PermissionResolved {
            request_id: r.request_id,
            option_id: r.option_id,
            by: r.by,
        }
    }
}

/// Answers a permission request of the running turn; the first answer wins.
#[utoipa::path(
    post, path = "/api/v1/sessions/{id}/permissions/{request_id}", operation_id = "answer_permission",
    tag = "controls",
    params(
        ("id" = uuid::Uuid, Path, description = "Session id"),
        ("request_id" = uuid::Uuid, Path, description = "The `request_id` of `permission.requested`"),
    ),
    request_body = PermissionReplyBody,
    responses(
        (status = 200, description = "Answered; `permission.resolved` is in the log", body = PermissionResolved),
        (status = 400, description = "`invalid_json`, `invalid_request` (a malformed id, an option the request did not offer)", body = ErrorBodySchema),
        (status = 401, description = "`unauthorized`", body = ErrorBodySchema),
        (status = 404, description = "`session_not_found`, `permission_not_found`", body = ErrorBodySchema),
        (status = 409, description = "`permission_resolved`: answered already, timed out, or its attempt ended", body = ErrorBodySchema),
    ),
    security(("bearer" = []))
)]
pub async fn answer(
    req: HttpRequest,
    session: OwnedSession,
    ApiJson(body): ApiJson<PermissionReplyBody>,
) -> Result<HttpResponse, ApiError> {
    let raw = req.match_info().get("request_id").unwrap_or_default();
    let request_id: uuid::Uuid = parse_id(raw, "request_id")?;
    let request_id = request_id.to_string();
    if body.option_id.is_empty() {
        return Err(
            ApiError::new(ErrorCode::InvalidRequest, "`option_id` must not be empty")
                .with("field", "option_id"),
        );
    }
    let resolution = session
        .handle
        .answer_permission(&request_id, &body.option_id, &session.caller.owner)
        .await?;
    Ok(HttpResponse::Ok().json(PermissionResolved::from(resolution)))
}

/// Registers the permission route (inside `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/sessions/{id}/permissions/{request_id}").route(web::post().to(answer)),
    );
}
