//! `ftserver`: flags to [`ft::server::Config`], logging, bind, run.

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use ft::server::{Config, Server, Shutdown};

/// Serve the files beneath a folder to ftclient over TCP.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// TCP port to listen on (0 picks a free one; the log says which)
    #[arg(long, default_value_t = ft::DEFAULT_PORT)]
    port: u16,
    /// Address to listen on (0.0.0.0 or :: for every interface)
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Folder whose files are served, sub-folders included
    #[arg(long, default_value = "server_downloads")]
    root: PathBuf,
    /// Folder that mirrors the cache on disk, so a restart starts warm
    #[arg(long, default_value = "server_cache")]
    cache_dir: PathBuf,
    /// Most bytes the cache holds, in memory and in --cache-dir (e.g. 64MiB, 1GiB, 1000000)
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    cache_size: u64,
    /// Age after which a cached file is dropped (e.g. 90s, 10m, 1h)
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    cache_ttl: Duration,
    /// Close a connection that sends no request for this long
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// Close a connection whose peer accepts no data for this long
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    send_timeout: Duration,
}

fn parse_size(s: &str) -> Result<u64, String> {
    parse_size::parse_size(s).map_err(|e| format!("{e} (expected bytes, or a size such as 64MiB or 1GiB)"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let config = Config {
        cache_dir: Some(args.cache_dir),
        cache_size: args.cache_size,
        cache_ttl: args.cache_ttl,
        idle_timeout: args.idle_timeout,
        send_timeout: args.send_timeout,
        ..Config::new(args.root)
    };
    let server = Server::new(config.clone())?;
    let addr = SocketAddr::new(args.bind, args.port);
    let listener = TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        root = %config.root.display(),
        cache_size = config.cache_size,
        warm_entries = server.warmed(),
        "listening on {addr}"
    );
    server.run(listener, &Shutdown::new())?;
    Ok(())
}
