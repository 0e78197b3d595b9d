//! Startup and shutdown: builds the store, providers and runtime from the configuration, binds
//! the listener (port 0 in tests; ask [`Application::port`]) and serves until told to stop.

use crate::auth::Auth;
use crate::config::{Config, StoreKind};
use crate::metrics::{self, HttpMetrics};
use crate::projects::ProjectPolicy;
use crate::providers::reaper::reap_orphans;
use crate::providers::{build_providers, fallbacks};
use crate::routes;
use crate::state::AppState;
use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use troupe_actors::{MemoryStore, NatsStore, Runtime, SledStore, Store};

/// A bound, ready-to-run server.
pub struct Application {
    /// The HTTP server, not yet polled.
    server: Server,
    /// Where it listens.
    address: SocketAddr,
    /// The runtime behind it.
    runtime: Runtime,
    /// How long running attempts get at shutdown.
    grace: Duration,
}

/// Opens the configured store.
pub fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match config.store.kind {
        StoreKind::Sled => {
            std::fs::create_dir_all(&config.data_dir).with_context(|| {
                format!("creating data directory {}", config.data_dir.display())
            })?;
            Arc::new(
                SledStore::open_with(&config.data_dir, config.store.durability)
                    .with_context(|| format!("opening store in {}", config.data_dir.display()))?,
            )
        }
        StoreKind::Memory => Arc::new(MemoryStore::new()),
        StoreKind::Nats => Arc::new(
            NatsStore::open(&config.store.nats_options())
                .with_context(|| format!("opening the NATS store at {}", config.store.url))?,
        ),
    })
}

impl Application {
    /// Builds everything and binds the listener. Must run inside an actix system.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let address = config.checked_bind()?;
        let store = open_store(&config)?;
        // Before anything can run a turn again: no agent of the previous server may still work.
        let mut settings = config.runtime.settings();
        config.cluster.apply(&mut settings)?;
        let reaped = reap_orphans(&store, &settings.node_id)
            .await
            .context("reaping agent processes left by the previous server")?;
        let provider_configs = config.provider_configs();
        let providers = build_providers(&provider_configs)?;
        settings.fallbacks = fallbacks(&provider_configs);
        settings.retention = config.retention.retention();
        settings.usage = config.usage_settings(&provider_configs);
        let mut builder = Runtime::builder().shared_store(store).settings(settings);
        for (name, provider) in providers.iter() {
            builder = builder.shared_provider(name.clone(), provider.clone());
        }
        let runtime = builder.start();
        runtime
            .metrics()
            .process_groups_reaped
            .fetch_add(reaped.reaped_groups as u64, Ordering::Relaxed);
        let listener = TcpListener::bind(address).with_context(|| format!("binding {address}"))?;
        let address = listener.local_addr()?;
        let state = AppState {
            runtime: runtime.clone(),
            auth: Auth::new(&config.auth),
            projects: ProjectPolicy::new(&config.projects.roots),
            config: Arc::new(config.clone()),
            metrics: Arc::new(HttpMetrics::new(runtime.clone())),
        };
        let grace = Duration::from_secs(config.shutdown_grace_secs);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(state.clone()))
                .wrap(actix_web::middleware::ErrorHandlers::new().handler(
                    actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
                    crate::error::method_not_allowed,
                ))
                .wrap(actix_web::middleware::from_fn(metrics::track))
                .configure(|cfg| routes::configure(cfg, &state.config))
                .default_service(web::to(routes::not_found))
        })
        // Streams are many small frames: without this the last frames of a burst wait for the
        // peer's delayed ACK (~40 ms on Linux).
        .tcp_nodelay(true)
        .listen(listener)?
        .disable_signals()
        .shutdown_timeout(1)
        .run();
        log::info!("troupe listening on http://{address}");
        Ok(Application {
            server,
            address,
            runtime,
            grace,
        })
    }

    /// Where the server listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// The runtime behind the server.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Serves until `shutdown` completes, then shuts down gracefully: stop accepting, let
    /// running attempts finish within the grace period, interrupt the rest, flush the store.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let server = actix_web::rt::spawn(self.server);
        shutdown.await;
        log::info!(
            "shutting down: no new connections; {:?} grace for running turns",
            self.grace
        );
        handle.pause().await;
        self.runtime.shutdown(self.grace).await;
        handle.stop(false).await;
        let _ = server.await;
        Ok(())
    }
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
