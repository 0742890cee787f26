//! `ftclient`: flags to [`ft::client::Client`] calls; data on stdout, messages on stderr.
//!
//! The pieces, one per file: `cli.rs` (flags and commands), `login.rs` (TLS, trust and token),
//! `get.rs`, `tree.rs` (`get -r`), `put.rs`, `listing.rs` (`list`), `bench.rs` and `shell.rs`
//! (the commands), `report.rs` (what `--json` prints), `progress.rs` (the bar and notes on
//! stderr), `retry.rs` (`--retry`), `names.rs` (names as given), `exit.rs` (exit codes) and
//! `signals.rs` (Ctrl-C).

use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use ft::client::bench::BenchConfig;
use ft::client::{Client, ClientError};
use ft::wire::escape;

mod bench;
mod cli;
mod exit;
mod get;
mod listing;
mod login;
mod names;
mod progress;
mod put;
mod report;
mod retry;
mod shell;
mod signals;
mod tree;

use cli::{Args, Command};
use progress::{Bar, Voice};
use retry::Retry;

fn main() -> ExitCode {
    let args = Args::parse();
    let saves_parts = match &args.command {
        Command::Get(get) => get.output != Path::new("-"),
        Command::Shell { .. } => true,
        _ => false,
    };
    if let Err(e) = signals::exit_on_interrupt(saves_parts) {
        eprintln!("ftclient: cannot watch signals: {e}");
    }
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    match run(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) if exit::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            if e.chain().any(|c| matches!(c.downcast_ref(), Some(ClientError::HostKeyChanged(_)))) {
                eprint!("{}", exit::KEY_CHANGED);
            }
            eprintln!("ftclient: {}", escape(&ft::human::chain(e.chain())));
            ExitCode::from(exit::code_of_error(&e))
        }
    }
}

/// Runs the command; `Ok(code)` is 0, or the exit code of a failure already reported.
fn run(args: Args) -> anyhow::Result<u8> {
    let retry = Retry::new(args.retry, args.retry_delay.0);
    // An IPv6 address is written in brackets before its port, however it was given.
    let addr = match args.host.parse::<std::net::Ipv6Addr>() {
        Ok(v6) => format!("[{v6}]:{}", args.port),
        Err(_) => format!("{}:{}", args.host, args.port),
    };
    // One bar per command; the shell keeps its own notes instead (a bar would linger between prompts).
    let bar = Bar::new(args.quiet || matches!(args.command, Command::Shell { .. }));
    let tls = login::tls_options(&args);
    let token = login::read_token(args.token_file.as_deref())?;
    let congestion_warned = std::sync::atomic::AtomicBool::new(false);
    let connect = || {
        let mut client = Client::connect_with(&addr, args.timeout.0, &tls)?;
        match args.congestion.as_deref() {
            Some("system") => {}
            None => {
                let _ = client.set_congestion("bbr");
            }
            Some(name) => {
                if let Err(e) = client.set_congestion(name) {
                    let warned = congestion_warned.swap(true, std::sync::atomic::Ordering::Relaxed);
                    if !warned {
                        eprintln!(
                            "ftclient: cannot set TCP congestion control {}: {e}; using the system's",
                            escape(name)
                        );
                    }
                }
            }
        }
        if let Some(token) = &token {
            client.authenticate(token)?;
        }
        if let Some(bar) = &bar {
            client.set_progress(bar.clone());
        }
        // Delta costs a read of the older copy and a scan on the server, compression a pass of
        // zstd on each side: where bytes are free (the server on this machine), neither pays.
        let local = client.is_local();
        client.set_delta(args.delta || (!args.whole_file && !local));
        client.set_compress(args.compress || (!args.no_compress && !local));
        Ok::<_, ClientError>(client)
    };
    let bar = bar.as_ref();
    let voice = Voice { quiet: args.quiet, verbose: args.verbose && !args.quiet };
    match args.command {
        Command::Completions { shell } => {
            let mut command = <Args as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "ftclient", &mut io::stdout());
            Ok(0)
        }
        Command::List { folder, json } => listing::run(&connect, folder, json),
        Command::Get(get) => get::run(&connect, bar, voice, retry, get),
        Command::Put(put) => put::run(&connect, bar, voice, retry, put),
        Command::Stats => {
            let mut out = io::stdout().lock();
            for (key, value) in connect()?.stats().context("stats")? {
                writeln!(out, "{} {value}", escape(&key))?;
            }
            Ok(0)
        }
        Command::Shell { output } => shell::run(&connect, &output, voice),
        Command::Bench { names, conns, duration, pipeline } => bench::run(&BenchConfig {
            addr,
            names: names::parse_names(&names)?,
            conns: conns.max(1),
            duration,
            pipeline,
            timeout: args.timeout.0,
            tls: tls.clone(),
            token: token.clone(),
        }),
    }
}
