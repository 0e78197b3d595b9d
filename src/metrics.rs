//! Prometheus metrics: the HTTP layer's own (requests by route pattern and status, latency,
//! WebSocket connections) and the runtime's counters, read at scrape time.
//!
//! Every metric is prefixed `troupe_`; the list is in docs/OPERATIONS.md.

use crate::routes::ws::WsMetrics;
use crate::state::AppState;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, Error};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::Arc;
use std::time::Instant;
use troupe_actors::cluster::wire::SessionOp;
use troupe_actors::metrics::{RuntimeMetrics, OUTCOMES};
use troupe_actors::retention::Expiry;
use troupe_actors::Runtime;

/// The content type of the text exposition format `prometheus-client` writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of an HTTP request count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// GET, POST, …; anything unusual is `other`.
    method: &'static str,
    /// The matched route pattern (`/api/v1/sessions/{id}`), or `unmatched`.
    route: String,
    /// The answer's status code.
    status: u16,
}

/// Labels of a latency observation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    /// GET, POST, …
    method: &'static str,
    /// The matched route pattern.
    route: String,
}

fn latency_histogram() -> Histogram {
    // 1 ms … ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The server's metrics: a cheap handle shared through [`AppState`].
/// WebSocket figures come from [`crate::routes::ws::WsMetrics`].
pub struct HttpMetrics {
    /// Holds every metric below plus the runtime collector; encoded on scrape.
    registry: Registry,
    /// Requests by method, route pattern and status.
    requests: Family<RequestLabels, Counter>,
    /// Time to the response head, by method and route pattern.
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Whose store [`HttpMetrics::refresh`] reads.
    runtime: Runtime,
    /// Sessions in the store at the last refresh; -1 when unknown.
    stored_sessions: Arc<AtomicI64>,
    /// Bytes the store took at the last refresh; -1 when unknown.
    store_bytes: Arc<AtomicI64>,
}

impl fmt::Debug for HttpMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpMetrics").finish_non_exhaustive()
    }
}

impl HttpMetrics {
    /// The metrics of a server in front of `runtime`.
    pub fn new(runtime: Runtime) -> Self {
        let mut registry = Registry::with_prefix("troupe");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "http_requests",
            "HTTP requests by method, route pattern and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to the response head, by method and route pattern",
            latency.clone(),
        );
        let stored_sessions = Arc::new(AtomicI64::new(-1));
        let store_bytes = Arc::new(AtomicI64::new(-1));
        registry.register_collector(Box::new(RuntimeCollector {
            runtime: runtime.clone(),
            stored_sessions: stored_sessions.clone(),
            store_bytes: store_bytes.clone(),
        }));
        HttpMetrics {
            registry,
            requests,
            latency,
            runtime,
            stored_sessions,
            store_bytes,
        }
    }

    /// Counts one answered request.
    pub fn observe(&self, method: &str, route: String, status: u16, seconds: f64) {
        let method = known_method(method);
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route: route.clone(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { method, route })
            .observe(seconds);
    }

    /// Reads what the exposition shows from the store (the store's reads are asynchronous, the
    /// encoder is not): call before [`HttpMetrics::render`].
    pub async fn refresh(&self) {
        let (stored, bytes) = match self.runtime.store().stats().await {
            Ok(stats) => (stats.sessions as i64, stats.bytes as i64),
            // A failing store only hides the passivated figure and the store's size.
            Err(_) => (-1, -1),
        };
        self.stored_sessions
            .store(stored, std::sync::atomic::Ordering::Relaxed);
        self.store_bytes
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("metrics encode into a String");
        out
    }
}

/// Keeps the `method` label's values bounded whatever clients send.
fn known_method(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "PATCH" => "PATCH",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

/// Middleware: counts every request by its route pattern (never its raw path, so ids do not
/// blow up the label set) and status, and observes the time to the response head.
pub async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.metrics.clone());
    let method = req.method().as_str().to_string();
    let path_pattern = req.match_pattern();
    let result = next.call(req).await;
    if let Some(metrics) = metrics {
        let seconds = started.elapsed().as_secs_f64();
        let (route, status) = match &result {
            Ok(res) => (
                res.request().match_pattern().or(path_pattern),
                res.status().as_u16(),
            ),
            Err(e) => (path_pattern, e.as_response_error().status_code().as_u16()),
        };
        let route = route.unwrap_or_else(|| "unmatched".into());
        metrics.observe(&method, route, status, seconds);
    }
    result
}

/// The runtime's counters and gauges, read on each scrape.
struct RuntimeCollector {
    /// Where the counters live.
    runtime: Runtime,
    /// Sessions in the store at the last refresh (for the passivated count); -1 when unknown.
    stored_sessions: Arc<AtomicI64>,
    /// Bytes the store took at the last refresh; -1 when unknown.
    store_bytes: Arc<AtomicI64>,
}

impl fmt::Debug for RuntimeCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeCollector").finish_non_exhaustive()
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: &AtomicU64,
) -> fmt::Result {
    let metric = ConstCounter::new(RuntimeMetrics::get(value));
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for RuntimeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let ws = WsMetrics::global();
        gauge(
            &mut encoder,
            "ws_connections",
            "WebSocket connections open now",
            ws.open_connections(),
        )?;
        counter(
            &mut encoder,
            "ws_connections",
            "WebSocket connections accepted",
            &ws.connections_total,
        )?;
        counter(
            &mut encoder,
            "ws_lagged",
            "WebSocket connections closed 1013 lagged",
            &ws.lagged,
        )?;
        counter(
            &mut encoder,
            "ws_oversized",
            "WebSocket connections closed 1009 for an oversized frame",
            &ws.oversized,
        )?;
        counter(
            &mut encoder,
            "ws_timeouts",
            "WebSocket connections dropped for heartbeat silence",
            &ws.timeouts,
        )?;
        use std::sync::atomic::Ordering::Relaxed;
        let m = self.runtime.metrics();
        let live = m.live_sessions.load(Relaxed).max(0);
        // The store counts every session; an unknown count only hides the passivated figure
        // and the store's size.
        let stored = match self.stored_sessions.load(Relaxed) {
            -1 => live,
            stored => stored,
        };
        let store_bytes = self.store_bytes.load(Relaxed);
        if store_bytes >= 0 {
            gauge(
                &mut encoder,
                "store_bytes",
                "Bytes the store takes (sled: on disk)",
                store_bytes,
            )?;
        }
        let sessions = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "sessions",
            "Sessions by residence: live actors, or passivated in the store",
            None,
            sessions.metric_type(),
        )?;
        for (state, value) in [("live", live), ("passivated", (stored - live).max(0))] {
            ConstGauge::new(value).encode(family.encode_family(&[("state", state)])?)?;
        }
        let completed = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "turns_completed",
            "Turns ended, by outcome",
            None,
            completed.metric_type(),
        )?;
        for (outcome, value) in OUTCOMES.iter().zip(&m.turns_completed) {
            let name = serde_json::to_value(outcome)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            ConstCounter::new(RuntimeMetrics::get(value))
                .encode(family.encode_family(&[("outcome", name.as_str())])?)?;
        }
        let expired = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "sessions_expired",
            "Sessions removed by retention, by kind",
            None,
            expired.metric_type(),
        )?;
        for (kind, value) in Expiry::ALL.iter().zip(&m.sessions_expired) {
            ConstCounter::new(RuntimeMetrics::get(value))
                .encode(family.encode_family(&[("kind", kind.as_str())])?)?;
        }
        let forwarded = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "forwarded_requests",
            "Session operations sent to the node that runs their session, by operation",
            None,
            forwarded.metric_type(),
        )?;
        for (op, value) in SessionOp::NAMES.iter().zip(&m.forwarded) {
            ConstCounter::new(RuntimeMetrics::get(value))
                .encode(family.encode_family(&[("op", *op)])?)?;
        }
        counter(
            &mut encoder,
            "forwards_served",
            "Session operations other nodes forwarded here, run on this node",
            &m.forwards_served,
        )?;
        counter(
            &mut encoder,
            "remote_follows",
            "Follows of sessions another node runs, read from the store's stream",
            &m.remote_follows,
        )?;
        counter(
            &mut encoder,
            "turns_accepted",
            "Turns accepted",
            &m.turns_accepted,
        )?;
        counter(
            &mut encoder,
            "attempts",
            "Provider attempts started",
            &m.attempts,
        )?;
        counter(
            &mut encoder,
            "retries",
            "Retries scheduled after transient failures",
            &m.retries,
        )?;
        counter(
            &mut encoder,
            "events_appended",
            "Events appended to session logs",
            &m.events_appended,
        )?;
        counter(
            &mut encoder,
            "lagged_drops",
            "Subscribers dropped for lagging",
            &m.lagged_drops,
        )?;
        counter(
            &mut encoder,
            "store_failures",
            "Sessions stopped because a store write failed",
            &m.store_failures,
        )?;
        counter(
            &mut encoder,
            "session_activations",
            "Session actors started",
            &m.activations,
        )?;
        counter(
            &mut encoder,
            "session_passivations",
            "Session actors passivated",
            &m.passivations,
        )?;
        counter(
            &mut encoder,
            "sessions_created",
            "Sessions created",
            &m.sessions_created,
        )?;
        counter(
            &mut encoder,
            "process_groups_reaped",
            "Agent process groups a previous server left alive, killed at startup",
            &m.process_groups_reaped,
        )?;
        counter(
            &mut encoder,
            "session_panics",
            "Session actors restarted after a panic",
            &m.panics,
        )?;
        gauge(
            &mut encoder,
            "queue_depth",
            "Queued turns across live sessions",
            m.queue_depth.load(Relaxed),
        )?;
        gauge(
            &mut encoder,
            "subscribers",
            "Event subscribers across live sessions",
            m.subscribers.load(Relaxed),
        )?;
        gauge(
            &mut encoder,
            "running_attempts",
            "Provider attempts running now",
            m.running_attempts.load(Relaxed),
        )?;
        cluster(&mut encoder, &self.runtime)?;
        usage(&mut encoder, m)
    }
}

/// `troupe_node_info{node}`, the leases this node holds, its takeovers and the sessions it
/// stopped for a lease it could not renew.
fn cluster(encoder: &mut DescriptorEncoder, runtime: &Runtime) -> fmt::Result {
    let info = ConstGauge::new(1i64);
    let mut family = encoder.encode_descriptor(
        "node_info",
        "This node's id among the nodes sharing a store",
        None,
        info.metric_type(),
    )?;
    info.encode(family.encode_family(&[("node", runtime.node_id())])?)?;
    gauge(
        encoder,
        "leases_held",
        "Session leases this node holds",
        runtime.store().leases_held() as i64,
    )?;
    let m = runtime.metrics();
    counter(
        encoder,
        "takeovers",
        "Sessions with open turns taken over because no node held their lease",
        &m.takeovers,
    )?;
    counter(
        encoder,
        "lease_renew_failures",
        "Sessions stopped because their lease was not renewed in time or another node took it",
        &m.leases_lost,
    )
}

/// `troupe_tokens_total{provider, kind}` and `troupe_cost_usd_total{provider}`: the usage of
/// every attempt counted since the process started (failed and retried ones included).
fn usage(encoder: &mut DescriptorEncoder, m: &RuntimeMetrics) -> fmt::Result {
    let by_provider = m.usage_by_provider();
    let mut family = encoder.encode_descriptor(
        "tokens",
        "Tokens used, by provider and kind (input includes cached)",
        None,
        ConstCounter::new(0u64).metric_type(),
    )?;
    for (provider, used) in &by_provider {
        for (kind, value) in [
            ("input", used.input_tokens),
            ("output", used.output_tokens),
            ("cached", used.cached_tokens),
        ] {
            ConstCounter::new(value).encode(
                family.encode_family(&[("provider", provider.as_str()), ("kind", kind)])?,
            )?;
        }
    }
    let mut family = encoder.encode_descriptor(
        "cost_usd",
        "US dollars spent, by provider",
        None,
        ConstCounter::new(0f64).metric_type(),
    )?;
    for (provider, used) in &by_provider {
        ConstCounter::new(used.cost_usd)
            .encode(family.encode_family(&[("provider", provider.as_str())])?)?;
    }
    Ok(())
}
