//! `tandem`: the Tandem sync server's command line.

mod auth_cli;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tandem_server::config::Config;
use tandem_server::server::Server;

mod history_cli;

#[derive(Parser)]
#[command(
    name = "tandem",
    version,
    about = "Tandem: real-time collaboration for 3D scenes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sync server (WebSocket at /sync, /healthz, /metrics, /api/v1).
    Serve(ServeArgs),
    /// Manage users (`tandem user add NAME`, `tandem user list`).
    #[command(subcommand)]
    User(auth_cli::UserCmd),
    /// Manage access tokens (`tandem token create --user U --room R --role editor`).
    #[command(subcommand)]
    Token(auth_cli::TokenCmd),
    /// History: log, show, diff, blame, checkpoint(s), restore, export.
    #[command(flatten)]
    History(history_cli::HistoryCommand),
}

/// Settings: flag > environment variable > config file > default.
#[derive(clap::Args)]
struct ServeArgs {
    /// TOML config file (same keys as the flags, with underscores; durations in ms).
    #[arg(long, env = "TANDEM_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address [default: 127.0.0.1:7890].
    #[arg(long, env = "TANDEM_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Data directory holding the store [default: ./tandem-data].
    #[arg(long, env = "TANDEM_DATA")]
    data: Option<PathBuf>,
    /// Largest WebSocket message in bytes; bigger ones close the connection with 1009
    /// [default: 67108864].
    #[arg(long, env = "TANDEM_MAX_MESSAGE_BYTES")]
    max_message_bytes: Option<usize>,
    /// Milliseconds from TCP accept to a completed join [default: 10000].
    #[arg(long, env = "TANDEM_HANDSHAKE_TIMEOUT_MS")]
    handshake_timeout_ms: Option<u64>,
    /// Milliseconds between pings [default: 15000].
    #[arg(long, env = "TANDEM_PING_INTERVAL_MS")]
    ping_interval_ms: Option<u64>,
    /// Milliseconds of silence (no frame, no pong) before closing with 1008 [default: 45000].
    #[arg(long, env = "TANDEM_IDLE_TIMEOUT_MS")]
    idle_timeout_ms: Option<u64>,
    /// Milliseconds a room with no connections keeps its documents loaded [default: 600000].
    #[arg(long, env = "TANDEM_KEEP_IDLE_DOCUMENTS_MS")]
    keep_idle_documents_ms: Option<u64>,
    /// Frames queued per connection before it is dropped as a slow reader [default: 4096].
    #[arg(long, env = "TANDEM_OUTBOUND_QUEUE")]
    outbound_queue: Option<usize>,
    /// Simultaneous connections [default: 10000].
    #[arg(long, env = "TANDEM_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Compact a document once its change log outgrows both its snapshot and this many
    /// bytes [default: 1048576].
    #[arg(long, env = "TANDEM_MIN_COMPACT_BYTES")]
    min_compact_bytes: Option<usize>,
    /// Log as JSON lines.
    #[arg(long, env = "TANDEM_LOG_JSON")]
    log_json: bool,
    /// Allow listening beyond loopback with no users configured: anyone who can reach the
    /// address can edit every room. Logged loudly. For a trusted LAN only.
    #[arg(long, env = "TANDEM_INSECURE")]
    insecure: bool,
    /// Require a valid token for /metrics once users exist (open by default, for scrapers).
    #[arg(long, env = "TANDEM_METRICS_NEED_TOKEN")]
    metrics_need_token: bool,
    /// PEM certificate chain (leaf first): serve wss:// and https:// instead of ws:// and
    /// http://. Needs --tls-key.
    #[arg(long, env = "TANDEM_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, env = "TANDEM_TLS_KEY")]
    tls_key: Option<PathBuf>,
}

impl ServeArgs {
    fn into_config(self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                Config::from_toml(&text).with_context(|| format!("parsing {}", path.display()))?
            }
            None => Config::default(),
        };
        let ms = std::time::Duration::from_millis;
        if let Some(v) = self.listen {
            c.listen = v
        }
        if let Some(v) = self.data {
            c.data = v
        }
        if let Some(v) = self.max_message_bytes {
            c.max_message_bytes = v
        }
        if let Some(v) = self.handshake_timeout_ms {
            c.handshake_timeout = ms(v)
        }
        if let Some(v) = self.ping_interval_ms {
            c.ping_interval = ms(v)
        }
        if let Some(v) = self.idle_timeout_ms {
            c.idle_timeout = ms(v)
        }
        if let Some(v) = self.keep_idle_documents_ms {
            c.keep_idle_documents = ms(v)
        }
        if let Some(v) = self.outbound_queue {
            c.outbound_queue = v
        }
        if let Some(v) = self.max_connections {
            c.max_connections = v
        }
        if let Some(v) = self.min_compact_bytes {
            c.min_compact_bytes = v
        }
        if self.insecure {
            c.insecure = true
        }
        if self.metrics_need_token {
            c.metrics_need_token = true
        }
        if let Some(v) = self.tls_cert {
            c.tls_cert = Some(v)
        }
        if let Some(v) = self.tls_key {
            c.tls_key = Some(v)
        }
        Ok(c)
    }
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("signal received");
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            init_logs(args.log_json);
            let config = args.into_config()?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let server = Server::bind(config).await?;
                // The first line on stdout is the bound address, for scripts and tests.
                println!("listening on {}", server.local_addr());
                server.run(shutdown_signal()).await?;
                anyhow::Ok(())
            })?;
        }
        Command::User(cmd) => auth_cli::user(cmd)?,
        Command::Token(cmd) => auth_cli::token(cmd)?,
        Command::History(cmd) => history_cli::run(cmd)?,
    }
    Ok(())
}
