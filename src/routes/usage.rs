//! Usage: `GET /api/v1/usage` (owners' totals per UTC day), and the rule for who may set a
//! session's budget.

use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::extract::OwnedSession;
use crate::schema::{ErrorBodySchema, OwnerDayUsageSchema, UsageSchema};
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Deserializer, Serialize};
use troupe_actors::usage::{utc_day, OwnerDayUsage};
use troupe_actors::{Budget, Usage};
use utoipa::{IntoParams, ToSchema};

/// The query of `GET /usage`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Whose usage: an admin may name any owner (absent: every owner); others only themselves
    /// (absent: themselves).
    #[param(min_length = 1)]
    pub owner: Option<String>,
    /// First UTC day, `YYYY-MM-DD` (default: today).
    #[param(format = Date)]
    pub from: Option<String>,
    /// Last UTC day, `YYYY-MM-DD`, inclusive (default: `from`, or today).
    #[param(format = Date)]
    pub to: Option<String>,
}

/// The answer of `GET /usage`.
#[derive(Serialize, ToSchema)]
pub struct UsageReport {
    /// First day covered.
    pub from: String,
    /// Last day covered.
    pub to: String,
    /// One row per owner and day with usage, by owner then day.
    #[schema(value_type = Vec<OwnerDayUsageSchema>)]
    pub days: Vec<OwnerDayUsage>,
    /// The sum of the rows.
    #[schema(value_type = UsageSchema)]
    pub total: Usage,
}

/// A UTC day from the query, checked.
fn day(value: Option<&str>, field: &str, default: &str) -> Result<String, ApiError> {
    let Some(value) = value else {
        return Ok(default.to_string());
    };
    chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .map(|d| d.format("%Y-%m-%d").to_string())
        .map_err(|_| {
            ApiError::invalid_request(format!("`{field}` must be a day as YYYY-MM-DD"))
                .with("field", field)
        })
}

/// Owners' usage per UTC day: the caller's own, or (admins) anyone's.
#[utoipa::path(
    get, path = "/api/v1/usage", operation_id = "get_usage", tag = "usage",
    params(UsageQuery),
    responses(
        (status = 200, description = "Usage per owner and day", body = UsageReport),
        (status = 400, description = "`invalid_request`: a malformed day", body = ErrorBodySchema),
        (status = 401, description = "`unauthorized`", body = ErrorBodySchema),
        (status = 403, description = "`forbidden`: another owner's usage without an admin token", body = ErrorBodySchema),
    ),
    security(("bearer" = []))
)]
pub async fn usage(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<UsageQuery>,
) -> Result<HttpResponse, ApiError> {
    if query.owner.as_deref() == Some("") {
        return Err(ApiError::invalid_request("`owner` must not be empty").with("field", "owner"));
    }
    let owner = match (&query.owner, caller.admin) {
        (Some(owner), true) => Some(owner.clone()),
        (None, true) => None,
        (Some(owner), false) if *owner != caller.owner => {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "another owner's usage needs an admin token",
            ))
        }
        (_, false) => Some(caller.owner.clone()),
    };
    let today = utc_day();
    let from = day(query.from.as_deref(), "from", &today)?;
    let to = day(query.to.as_deref(), "to", &from)?;
    let days = state
        .runtime
        .store()
        .usage_days(owner.as_deref(), &from, &to)
        .await
        .map_err(troupe_actors::RuntimeError::from)?;
    let total = days.iter().fold(Usage::default(), |t, d| t.plus(&d.usage));
    Ok(HttpResponse::Ok().json(UsageReport {
        from,
        to,
        days,
        total,
    }))
}

/// A session budget a caller may set: at most the configured one unless the caller is an
/// admin; figures not negative.
pub async fn check_budget(
    state: &AppState,
    session: &OwnedSession,
    budget: &Budget,
) -> Result<(), ApiError> {
    if budget
        .max_cost_usd
        .is_some_and(|c| !(c >= 0.0 && c.is_finite()))
    {
        return Err(
            ApiError::invalid_request("`budget.max_cost_usd` must be a number ≥ 0")
                .with("field", "budget.max_cost_usd"),
        );
    }
    if budget.max_tokens.is_some_and(|t| t > i64::MAX as u64) {
        return Err(
            ApiError::invalid_request("`budget.max_tokens` is larger than 2^63 - 1")
                .with("field", "budget.max_tokens"),
        );
    }
    if session.caller.admin {
        return Ok(());
    }
    let view = session.handle.info().await?;
    let configured = state
        .runtime
        .settings()
        .usage
        .configured_session_budget(&view.provider);
    if configured.covers(budget) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::Forbidden,
            "a budget above the configured one needs an admin token",
        ))
    }
}

/// Deserializes a field that is present (null included) as `Some`, so `Option<Option<T>>`
/// tells "absent" (`None`) from "null" (`Some(None)`). Only an object or null is taken: serde
/// would read a struct from an array too.
pub fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    match Option::<serde_json::Value>::deserialize(d)? {
        None => Ok(Some(None)),
        Some(value @ serde_json::Value::Object(_)) => serde_json::from_value(value)
            .map(|v| Some(Some(v)))
            .map_err(serde::de::Error::custom),
        Some(_) => Err(serde::de::Error::custom("expected an object or null")),
    }
}

/// Registers `/usage` (inside `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/usage").route(web::get().to(usage)));
}
