//! The `troupe` binary: parses the command line and hands off to the library.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use troupe::acp_agent::{serve_stdio, AcpAgentOptions};
use troupe::app::{shutdown_signal, Application};
use troupe::config::Config;

#[derive(Parser)]
#[command(
    name = "troupe",
    version,
    about = "Actor-model runtime for AI-agent chat sessions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP, WebSocket, SSE and OpenAI-compatible API.
    Serve {
        /// A TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on (overrides the configuration).
        #[arg(long)]
        bind: Option<String>,
        /// Data directory of the sled store (overrides the configuration).
        #[arg(long)]
        data: Option<PathBuf>,
        /// The store (overrides the configuration): `sled`, `memory`, or a NATS server's URL
        /// (`nats://127.0.0.1:4222`) to share the store with other nodes.
        #[arg(long)]
        store: Option<String>,
        /// This node's id among the nodes sharing a NATS store (overrides the configuration;
        /// default: the host name and 6 random hex digits).
        #[arg(long)]
        node_id: Option<String>,
    },
    /// Speak the Agent Client Protocol on stdio, backed by a Troupe server (for editors).
    Acp {
        /// The server's root URL.
        #[arg(long, env = "TROUPE_URL", default_value = "http://127.0.0.1:7878")]
        url: String,
        /// A bearer token, when the server requires one.
        #[arg(long, env = "TROUPE_TOKEN")]
        token: Option<String>,
        /// The provider of sessions the editor creates.
        #[arg(long, default_value = "echo")]
        provider: String,
    },
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let (config, bind, data, store, node_id) = match Cli::parse().command {
        Command::Serve {
            config,
            bind,
            data,
            store,
            node_id,
        } => (config, bind, data, store, node_id),
        Command::Acp {
            url,
            token,
            provider,
        } => {
            let options = AcpAgentOptions {
                url,
                token,
                provider,
            };
            return actix_web::rt::System::new().block_on(serve_stdio(options));
        }
    };
    let mut config = Config::load(config.as_deref())?;
    if let Some(bind) = bind {
        config.bind = bind;
    }
    if let Some(data) = data {
        config.data_dir = data;
    }
    if let Some(store) = store {
        config.store.apply_flag(&store)?;
    }
    if node_id.is_some() {
        config.cluster.node_id = node_id;
    }
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(config).await?;
        // Scripts and tests read the bound address from this line.
        println!("troupe listening on http://{}", app.address());
        app.run_until_stopped(shutdown_signal()).await
    })
}
