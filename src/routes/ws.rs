//! `GET /api/v1/ws`: one WebSocket connection, many subscriptions (DESIGN.md §11).
//!
//! The upgrade is authenticated first (`Authorization: Bearer …` or `?access_token=`; a refusal
//! is the usual 401 JSON error, before any upgrade). The connection itself lives in
//! [`connection`]; the JSON frames in [`frames`]. The wire protocol is written up in
//! `docs/PROTOCOL.md` (WebSocket section).

mod connection;
pub mod frames;

use crate::config::Config;
use crate::error::ApiError;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// How often the server pings an idle peer (default of `websocket.heartbeat_interval_ms`).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);

/// How long a peer may stay silent, no frame and no pong, before it is dropped (default of
/// `websocket.client_timeout_ms`).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// The connection's tunables, from the configuration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WsLimits {
    /// The server pings this often.
    pub heartbeat_interval: Duration,
    /// A peer silent this long is dropped (close 1001).
    pub client_timeout: Duration,
    /// Largest inbound frame, and largest message once continuations are joined (close 1009).
    pub frame_bytes: usize,
    /// Outbound frames the connection may have unsent before it is closed 1013 `lagged`.
    pub outbound_buffer: usize,
}

impl WsLimits {
    /// The limits of `config`; a zero duration falls back to the named default.
    pub fn of(config: &Config) -> Self {
        let ms = |value: u64, default: Duration| {
            if value == 0 {
                default
            } else {
                Duration::from_millis(value)
            }
        };
        WsLimits {
            heartbeat_interval: ms(config.websocket.heartbeat_interval_ms, HEARTBEAT_INTERVAL),
            client_timeout: ms(config.websocket.client_timeout_ms, CLIENT_TIMEOUT),
            frame_bytes: config.limits.ws_frame_bytes.max(1),
            outbound_buffer: config.limits.ws_outbound_buffer.max(1),
        }
    }
}

/// WebSocket figures for operators (rendered by `/metrics`). Process-wide, like a Prometheus
/// default registry: every server in the process adds to the same figures.
#[derive(Debug, Default)]
pub struct WsMetrics {
    /// Connections open now.
    pub connections: AtomicI64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Connections closed 1013 `lagged` (full outbound queue or a session dropped the
    /// subscriber as lagging).
    pub lagged: AtomicU64,
    /// Connections closed 1009 for an oversized frame.
    pub oversized: AtomicU64,
    /// Connections dropped for heartbeat silence.
    pub timeouts: AtomicU64,
}

static METRICS: WsMetrics = WsMetrics {
    connections: AtomicI64::new(0),
    connections_total: AtomicU64::new(0),
    lagged: AtomicU64::new(0),
    oversized: AtomicU64::new(0),
    timeouts: AtomicU64::new(0),
};

impl WsMetrics {
    /// The process's figures.
    pub fn global() -> &'static WsMetrics {
        &METRICS
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// The open-connections gauge.
    pub fn open_connections(&self) -> i64 {
        self.connections.load(Ordering::Relaxed)
    }
}

/// Upgrades an authenticated request and hands the connection to its own task.
async fn upgrade(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = state.auth.authenticate_stream(&req)?;
    let (response, session, stream) = actix_ws::handle(&req, body)
        .map_err(|e| ApiError::invalid_request(format!("not a WebSocket upgrade: {e}")))?;
    let limits = WsLimits::of(&state.config);
    log::info!("websocket opened for owner {}", caller.owner);
    actix_web::rt::spawn(connection::serve(
        caller.owner,
        state.runtime.clone(),
        limits,
        session,
        stream,
    ));
    Ok(response)
}

/// Registers `GET /api/v1/ws`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/api/v1/ws").route(web::get().to(upgrade)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_defaults_are_the_named_constants() {
        let limits = WsLimits::of(&Config::default());
        assert_eq!(limits.heartbeat_interval, HEARTBEAT_INTERVAL);
        assert_eq!(limits.client_timeout, CLIENT_TIMEOUT);
    }
}
