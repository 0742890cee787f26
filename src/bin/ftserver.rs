//! `ftserver`: flags to [`ft::server::Config`], logging, bind, run.

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;
use std::thread;

use anyhow::Context;
use clap::Parser;
use ft::human::{Size, Span};
use ft::server::auth;
use ft::server::tls::{Identity, ServerTls};
use ft::server::{Config, Server, Shutdown};

/// Serve the files beneath a folder to ftclient over TCP.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// TCP port to listen on (0 picks a free one; the log says which)
    #[arg(long, default_value_t = ft::DEFAULT_PORT)]
    port: u16,
    /// Address to listen on (0.0.0.0 or :: for every interface)
    #[arg(long, default_value_t = ft::server::DEFAULT_BIND)]
    bind: IpAddr,
    /// Folder whose files are served, sub-folders included
    #[arg(long, default_value = ft::server::DEFAULT_ROOT)]
    root: PathBuf,
    /// Folder that mirrors the cache on disk, so a restart starts warm
    #[arg(long, default_value = ft::server::DEFAULT_CACHE_DIR)]
    cache_dir: PathBuf,
    /// Most bytes the cache holds, in memory and in --cache-dir (e.g. 64MiB, 1GiB, 1000000)
    #[arg(long, default_value_t = Size(defaults().cache_size))]
    cache_size: Size,
    /// Age after which a cached file is dropped (e.g. 90s, 10m, 1h)
    #[arg(long, default_value_t = Span(defaults().cache_ttl))]
    cache_ttl: Span,
    /// Most connections served at once; more are answered with an ERR busy line and closed
    #[arg(long, default_value_t = defaults().max_conns)]
    max_conns: usize,
    /// Most threads connections may run at once, theirs and their helpers' (two store threads per uploading connection, hashing helpers); past it a connection gets ERR busy and a helper is not started. 0: what the system allows
    #[arg(long, value_name = "N", default_value_t = defaults().max_threads)]
    max_threads: usize,
    /// Most connections served at once from one address (an IPv6 /64); more are answered with an ERR busy line. 0: no limit
    #[arg(long, default_value_t = defaults().max_conns_per_addr)]
    max_conns_per_addr: usize,
    /// Apply --max-conns-per-addr to loopback peers too (by default the machine itself is not limited)
    #[arg(long)]
    limit_loopback: bool,
    /// Longest request line in bytes; a longer one gets an ERR too-long line and the connection is closed
    #[arg(long, default_value_t = defaults().max_line)]
    max_line: usize,
    /// Close a connection that sends no request for this long
    #[arg(long, default_value_t = Span(defaults().idle_timeout))]
    idle_timeout: Span,
    /// Close a connection whose request line, once begun, is not complete within this long
    #[arg(long, default_value_t = Span(defaults().request_timeout))]
    request_timeout: Span,
    /// Close a connection whose peer accepts no data for this long
    #[arg(long, default_value_t = Span(defaults().send_timeout))]
    send_timeout: Span,
    /// On SIGINT/SIGTERM, how long transfers in flight may take to finish (a second signal exits at once)
    #[arg(long, default_value_t = Span(defaults().grace))]
    grace: Span,
    /// On SIGTERM/SIGINT, first answer `health` with "draining" and keep serving for this long (so a load balancer sends new clients elsewhere), then stop accepting (e.g. 5s; 0: stop at once)
    #[arg(long, value_name = "AGE", default_value = "0s")]
    drain: Span,
    #[command(flatten)]
    identity: IdentityArgs,
    /// TCP congestion control for each connection (the server sends the downloads): bbr keeps a long, lossy link busy where cubic, the usual system default, backs off at each loss; "system" leaves the system's default
    #[arg(long, value_name = "NAME", default_value = "bbr")]
    congestion: String,
    /// Serve plain text to peers on other machines too (by default only TLS is served to them)
    #[arg(long)]
    allow_plaintext: bool,
    /// Tokens the server requires (see `ftserver token`); default ~/.config/ft/server_tokens, used if it exists
    #[arg(long, value_name = "FILE", conflicts_with = "no_auth")]
    auth_file: Option<PathBuf>,
    /// Require no token even if the default auth file exists (on loopback; elsewhere only with --allow-anonymous)
    #[arg(long)]
    no_auth: bool,
    /// Listen where other machines can connect without an auth file: every file served to anyone
    #[arg(long)]
    allow_anonymous: bool,
    /// Take uploads (put), into FOLDER beneath the root if given (else anywhere beneath it): with an auth file, from tokens with the write right; without one, from this machine only
    #[arg(long, value_name = "FOLDER", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    allow_upload: Option<String>,
    /// With --allow-upload: let an upload replace an existing file when the client asks (ftclient put --force)
    #[arg(long, requires = "allow_upload")]
    allow_overwrite: bool,
    /// Largest upload taken, checked before any of its bytes is read (e.g. 4GiB)
    #[arg(long, default_value_t = Size(defaults().max_upload))]
    max_upload: Size,
    /// Most bytes interrupted uploads (kept to resume) may hold beneath the root, each counted at its whole size; one token (or address, without tokens) at most half; past it the oldest no upload holds are removed first
    #[arg(long, value_name = "SIZE", default_value_t = Size(defaults().max_staging))]
    max_staging: Size,
    /// Most interrupted uploads kept at once; one token (or address) at most half
    #[arg(long, value_name = "N", default_value_t = defaults().max_staging_files)]
    max_staging_files: usize,
    /// Expect a PROXY protocol header (v1 or v2, as HAProxy's send-proxy sends) on connections from --trusted-proxy addresses: the client it names is used in logs, per-address limits and failed-token slowing
    #[arg(long, requires = "trusted_proxy")]
    proxy_protocol: bool,
    /// With --proxy-protocol: an address or range (10.0.0.0/8, fd00::/8) whose connections must begin with a PROXY header; a header from anywhere else is refused
    #[arg(long, value_name = "CIDR", num_args = 1.., requires = "proxy_protocol")]
    trusted_proxy: Vec<ft::server::proxy::Cidr>,
    /// Log lines on stderr: text for people, or json (one object per line) for log shippers
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Extra>,
}

/// Where the TLS identity comes from (the server, and `ftserver fingerprint`).
#[derive(clap::Args, Debug, Clone)]
struct IdentityArgs {
    /// TLS identity file (private key and self-signed certificate), generated on first start
    #[arg(long, value_name = "FILE", default_value_os_t = ft::server::tls::default_identity_path())]
    identity: PathBuf,
    /// TLS certificate chain (PEM) to use instead of the identity file, e.g. one a CA issued
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// The auth file `ftserver token` edits.
#[derive(clap::Args, Debug, Clone)]
struct AuthFileArg {
    /// The auth file (default ~/.config/ft/server_tokens; created 0600 if missing)
    #[arg(long, value_name = "FILE")]
    auth_file: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Subcommand, Debug)]
enum Extra {
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout and exit
    Completions { shell: clap_complete::Shell },
    /// Print the fingerprint of the server's TLS identity (making the identity if there is none) and exit
    Fingerprint {
        #[command(flatten)]
        identity: IdentityArgs,
    },
    /// Manage the tokens clients authenticate with (in --auth-file)
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(clap::Subcommand, Debug)]
enum TokenCommand {
    /// Make a token: printed once on stdout, only its hash is kept
    Add {
        /// A name for whoever holds it (shown in logs and `token list`)
        name: String,
        /// Also allow uploads (put, put -r), where the server takes them (ftserver --allow-upload)
        #[arg(long)]
        write: bool,
        #[command(flatten)]
        file: AuthFileArg,
    },
    /// Show the tokens' names and rights (never the tokens)
    List {
        #[command(flatten)]
        file: AuthFileArg,
    },
    /// Remove a token; a running server refuses it from its next request on, on every connection
    Revoke {
        name: String,
        #[command(flatten)]
        file: AuthFileArg,
    },
}

/// The library's defaults, which the help shows.
fn defaults() -> Config {
    Config::new(ft::server::DEFAULT_ROOT)
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Extra::Completions { shell }) = args.command {
        let mut command = <Args as clap::CommandFactory>::command();
        clap_complete::generate(shell, &mut command, "ftserver", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    // A fixed threshold keeps large buffers (cached files, hashing buffers) in their own mappings,
    // returned to the system when freed, instead of letting glibc raise the threshold and keep
    // freed megabytes in its arenas: the server's memory then follows what the cache holds.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts glibc's allocator settings; called before any other thread.
    unsafe {
        glibc::mallopt(glibc::M_MMAP_THRESHOLD, 128 << 10);
    }
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()));
    match args.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }
    let result = match &args.command {
        Some(Extra::Fingerprint { identity }) => fingerprint(&args, identity),
        Some(Extra::Token(command)) => token(&args, command),
        _ => run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{}", ft::human::chain(e.chain()));
            ExitCode::FAILURE
        }
    }
}

/// The TLS identity the flags name.
fn identity(args: &IdentityArgs) -> Identity {
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Identity::Pem { cert: cert.clone(), key: key.clone() },
        _ => Identity::File(args.identity.clone()),
    }
}

/// The auth file: `--auth-file`, or the default one if it exists, unless `--no-auth`.
fn auth_file(args: &Args) -> Option<PathBuf> {
    if args.no_auth {
        return None;
    }
    args.auth_file.clone().or_else(|| Some(auth::default_auth_path()).filter(|p| p.exists()))
}

/// `ftserver token ...`.
fn token(args: &Args, command: &TokenCommand) -> anyhow::Result<()> {
    let file = match command {
        TokenCommand::Add { file, .. } | TokenCommand::List { file } | TokenCommand::Revoke { file, .. } => file,
    };
    let path = file.auth_file.clone().or_else(|| args.auth_file.clone()).unwrap_or_else(auth::default_auth_path);
    match command {
        TokenCommand::Add { name, write, .. } => {
            let rights = auth::Rights { read: true, write: *write };
            let secret = auth::add(&path, name, rights)?;
            println!("{}", secret.expose());
            eprintln!(
                "token {name:?} ({rights}) added to {}; give it to its holder now (as FT_TOKEN, or in a file for \
                 --token-file): it is not shown again",
                path.display()
            );
        }
        TokenCommand::List { .. } => {
            for entry in auth::list(&path)? {
                println!("{}\t{}\t{}", entry.name, entry.rights, entry.id);
            }
        }
        TokenCommand::Revoke { name, .. } => {
            auth::revoke(&path, name)?;
            eprintln!("token {name:?} revoked in {}", path.display());
        }
    }
    Ok(())
}

/// `ftserver fingerprint`: the identity's fingerprint on stdout (the subcommand's identity flags,
/// else the server's).
fn fingerprint(args: &Args, own: &IdentityArgs) -> anyhow::Result<()> {
    let chosen = if own.tls_cert.is_some() || own.identity != ft::server::tls::default_identity_path() {
        own
    } else {
        &args.identity
    };
    let tls = ServerTls::load(&identity(chosen))?;
    if tls.created {
        tracing::info!("generated a new TLS identity in {}", chosen.identity.display());
    }
    println!("{}", tls.fingerprint);
    Ok(())
}

fn run(args: Args) -> anyhow::Result<()> {
    let config = Config {
        identity: identity(&args.identity),
        allow_plaintext: args.allow_plaintext,
        auth_file: auth_file(&args),
        allow_anonymous: args.allow_anonymous,
        allow_upload: args.allow_upload.is_some(),
        upload_folder: match args.allow_upload.as_deref().map(|f| f.trim_end_matches('/')) {
            None | Some("" | ".") => None,
            Some(folder) => Some(
                ft::name::Name::parse(folder)
                    .with_context(|| format!("--allow-upload={folder:?}: not a folder name beneath the root"))?,
            ),
        },
        allow_overwrite: args.allow_overwrite,
        proxy_protocol: args.proxy_protocol,
        trusted_proxies: args.trusted_proxy.clone(),
        max_upload: args.max_upload.0,
        max_staging: args.max_staging.0,
        max_staging_files: args.max_staging_files,
        cache_dir: Some(args.cache_dir),
        cache_size: args.cache_size.0,
        cache_ttl: args.cache_ttl.0,
        max_conns: args.max_conns,
        max_threads: args.max_threads,
        max_conns_per_addr: args.max_conns_per_addr,
        limit_loopback: args.limit_loopback,
        max_line: args.max_line,
        idle_timeout: args.idle_timeout.0,
        request_timeout: args.request_timeout.0,
        send_timeout: args.send_timeout.0,
        grace: args.grace.0,
        congestion: (args.congestion != "system").then(|| args.congestion.clone()),
        ..Config::new(args.root)
    };
    match ft::server::raise_fd_limit() {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }
    let server = Server::new(config.clone())?;
    let shutdown = Shutdown::new();
    watch_signals(shutdown.clone(), args.drain.0)?;
    let addr = SocketAddr::new(args.bind, args.port);
    server.may_listen_on(addr)?;
    let listener = TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let addr = listener.local_addr()?;
    if server.identity_created() {
        tracing::info!("generated a new TLS identity in {}", args.identity.identity.display());
    }
    tracing::info!(
        root = %config.root.display(),
        files = server.file_count(),
        cache_size = %ft::human::size(config.cache_size),
        warm_entries = server.warmed(),
        max_conns = server.max_conns(),
        auth = %server.auth().map_or("none".to_string(), |(file, _)| file.display().to_string()),
        tokens = server.auth().map_or(0, |(_, n)| n),
        fingerprint = %server.fingerprint(),
        "listening on {addr}"
    );
    server.run(listener, &shutdown)?;
    tracing::info!("stopped");
    Ok(())
}

/// First SIGINT/SIGTERM: say draining for `drain`, then stop accepting and let connections
/// finish. Second: exit at once.
fn watch_signals(shutdown: Shutdown, drain: std::time::Duration) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).context("cannot watch signals")?;
    thread::Builder::new().name("signals".into()).spawn(move || {
        for signal in signals.forever() {
            if shutdown.is_triggered() {
                tracing::warn!("second signal: exiting now");
                std::process::exit(128 + signal);
            }
            // Draining first, then said: whoever reads the line finds it so.
            let started = shutdown.drain_then_stop(drain);
            if let Err(e) = &started {
                tracing::warn!("cannot wait before stopping: {e}; stopping now");
                shutdown.trigger();
            }
            if drain.is_zero() || started.is_err() {
                tracing::info!("signal {signal}: finishing transfers in flight; send it again to exit at once");
            } else {
                tracing::info!(
                    "signal {signal}: health says draining; still serving for {drain:?}, then finishing transfers in flight; send it again to exit at once"
                );
            }
        }
    })?;
    Ok(())
}

/// glibc's `mallopt` (malloc.h), the one C call the server makes: declared here rather than
/// taking the `libc` crate for it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    use std::ffi::c_int;

    /// `M_MMAP_THRESHOLD` in malloc.h: allocations from this size get mappings of their own.
    pub const M_MMAP_THRESHOLD: c_int = -3;

    unsafe extern "C" {
        pub fn mallopt(param: c_int, value: c_int) -> c_int;
    }
}
