//! Authentication: bearer tokens map to owners; without tokens one implicit owner `local`.
//! Tokens come from `Authorization: Bearer …`; only the streaming doors a browser opens without
//! headers (the WebSocket and the SSE event stream) also take `?access_token=`
//! ([`Auth::authenticate_stream`]). Everywhere else the query token is ignored: URLs end up in
//! access logs, proxies and browser history, so a token there is a token leaked.

use crate::config::AuthConfig;
use crate::error::ApiError;
use crate::state::AppState;
use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use std::collections::HashMap;
use std::future::{ready, Ready};

/// The owner every request acts as when no tokens are configured.
pub const LOCAL_OWNER: &str = "local";

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The owner the request acts as.
    pub owner: String,
    /// Whether it may use the admin endpoints.
    pub admin: bool,
}

/// The token table.
#[derive(Clone, Debug, Default)]
pub struct Auth {
    /// Token → caller; empty means no authentication.
    tokens: HashMap<String, Caller>,
}

impl Auth {
    /// The table of `config`.
    pub fn new(config: &AuthConfig) -> Self {
        Auth {
            tokens: config
                .tokens
                .iter()
                .map(|t| {
                    (
                        t.token.0.clone(),
                        Caller {
                            owner: t.owner.clone(),
                            admin: t.admin,
                        },
                    )
                })
                .collect(),
        }
    }

    /// Whether tokens are required.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The caller a request authenticates as, by its `Authorization` header.
    pub fn authenticate(&self, req: &HttpRequest) -> Result<Caller, ApiError> {
        self.authenticate_with(bearer(req))
    }

    /// The caller of a streaming door (WebSocket, SSE): the `Authorization` header, or else
    /// `?access_token=`, because browsers' `WebSocket` and `EventSource` cannot send headers.
    pub fn authenticate_stream(&self, req: &HttpRequest) -> Result<Caller, ApiError> {
        self.authenticate_with(bearer(req).or_else(|| query_token(req)))
    }

    fn authenticate_with(&self, token: Option<String>) -> Result<Caller, ApiError> {
        if !self.enabled() {
            return Ok(Caller {
                owner: LOCAL_OWNER.into(),
                admin: true,
            });
        }
        let token = token.ok_or_else(ApiError::unauthorized)?;
        self.tokens
            .get(&token)
            .cloned()
            .ok_or_else(ApiError::unauthorized)
    }
}

fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

fn query_token(req: &HttpRequest) -> Option<String> {
    web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .ok()?
        .get("access_token")
        .cloned()
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let result = match req.app_data::<web::Data<AppState>>() {
            Some(state) => state.auth.authenticate(req),
            None => Err(ApiError::state_missing()),
        };
        ready(result)
    }
}

/// A caller with the admin flag; 403 `forbidden` otherwise.
#[derive(Clone, Debug)]
pub struct Admin(pub Caller);

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Admin, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let caller = match Caller::from_request(req, payload).into_inner() {
            Ok(c) => c,
            Err(e) => return ready(Err(e)),
        };
        ready(if caller.admin {
            Ok(Admin(caller))
        } else {
            Err(ApiError::forbidden())
        })
    }
}
