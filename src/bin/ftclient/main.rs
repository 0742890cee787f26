//! `ftclient`: flags to [`ft::client::Client`] calls; data on stdout, messages on stderr.

use std::collections::{HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::io::{self, IsTerminal, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ft::client::bench::{BenchConfig, BenchReport};
use ft::client::tree::{TreeEvent, TreeOptions};
use ft::client::trust::{TlsMode, TlsOptions, Trust};
use ft::client::{Client, ClientError, OutDir, Progress, PutOptions, Skipped};
use ft::fingerprint::Fingerprint;
use ft::human::Span;
use ft::name::Name;
use ft::wire::{EntryKind, ErrorCode, ListEntry, escape};

mod listing;
mod shell;

/// Download files from an ftserver, and upload files to one.
#[derive(Parser, Debug)]
#[command(version, after_help = EXIT_CODES)]
struct Args {
    /// Server host name or address
    #[arg(long, global = true, env = "FT_HOST", default_value = ft::client::DEFAULT_HOST)]
    host: String,
    /// Server port
    #[arg(long, global = true, env = "FT_PORT", default_value_t = ft::DEFAULT_PORT)]
    port: u16,
    /// Give up connecting, or waiting for the server, after this long (e.g. 10s, 2m; more than 0)
    #[arg(long, global = true, default_value_t = Span(ft::client::DEFAULT_TIMEOUT), value_parser = positive_span)]
    timeout: Span,
    /// Print nothing but errors (no progress bar, no notes)
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Retry a get or put up to N times after a transient failure (connection refused or lost, a timeout, the server busy), waiting --retry-delay, doubled each time; downloads resume from their .part, uploads from what the server holds, get -r and put go on with what is left
    #[arg(long, global = true, value_name = "N", default_value_t = 0)]
    retry: u32,
    /// The first wait before a retry (doubled after each, up to a minute)
    #[arg(long, global = true, value_name = "AGE", default_value = "1s")]
    retry_delay: Span,
    /// Speak TLS on loopback too (it is always spoken to other hosts)
    #[arg(long, global = true, conflicts_with = "plaintext")]
    tls: bool,
    /// Speak plain text even to another host: nothing is encrypted or authenticated
    #[arg(long, global = true)]
    plaintext: bool,
    /// Trust a server not seen before and add it to the known-hosts file (as ssh's StrictHostKeyChecking=accept-new)
    #[arg(long, global = true)]
    accept_new: bool,
    /// Trust only a server whose key has this fingerprint (as `ftserver fingerprint` prints it), for this run
    #[arg(long, global = true, value_name = "SHA256:...", value_parser = parse_fingerprint)]
    fingerprint: Option<Fingerprint>,
    /// Read the token to present from this file (else from $FT_TOKEN); never given on the command line, which ps shows
    #[arg(long, global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

fn parse_fingerprint(s: &str) -> Result<Fingerprint, String> {
    Fingerprint::parse(s)
        .ok_or_else(|| "expected SHA256: and 43 characters of base64, as `ftserver fingerprint` prints".into())
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the files the server offers (size, modification time, name)
    List {
        /// Only the files beneath this folder
        folder: Option<OsString>,
        /// Machine-readable output: a JSON array of {name, size (bytes), mtime (RFC 3339 UTC), mtime_unix}
        #[arg(long)]
        json: bool,
    },
    /// Download one or more files over one connection; with -r, folders, kept in sync
    Get {
        /// Folder to save into, keeping sub-folders (created if missing); '-' writes one file to stdout
        #[arg(short = 'o', long = "output", default_value = ft::client::DEFAULT_OUTPUT)]
        output: PathBuf,
        /// Continue from an existing NAME.part if the server confirms its bytes, else start over (the default)
        #[arg(long, overrides_with = "no_resume")]
        resume: bool,
        /// Start every file over, discarding an existing NAME.part
        #[arg(long, overrides_with = "resume")]
        no_resume: bool,
        /// Keep files that already exist locally (they are skipped, and said so) instead of replacing them
        #[arg(short = 'n', long)]
        no_clobber: bool,
        /// Print a JSON summary on stdout: each file's size, digest, resumed-from, or error; totals; elapsed
        #[arg(long)]
        json: bool,
        /// Fetch folders with all they hold ('.' is the whole server), skipping files whose local copy has the same size and modification time
        #[arg(short = 'r', long)]
        recursive: bool,
        /// With -r: remove local files and folders beneath the fetched folders that the server does not have
        #[arg(long, requires = "recursive")]
        delete: bool,
        /// With -r: print what would be fetched and removed ("fetch NAME", "delete NAME"), and change nothing
        #[arg(long, requires = "recursive")]
        dry_run: bool,
        /// With -r: compare files by digest (the server's, and one read of the local copy) instead of size and time
        #[arg(short = 'c', long, requires = "recursive")]
        checksum: bool,
        /// With -r: follow symlinks on the server (inside what it serves) and fetch what they lead to, as rsync -L; without it, each symlink arrives as a symlink
        #[arg(short = 'L', long, requires = "recursive")]
        copy_links: bool,
        /// Names as `list` shows them (with -r, folders too; a trailing / is ignored)
        #[arg(required = true)]
        names: Vec<OsString>,
    },
    /// Upload files to the server over one connection (it must run with --allow-upload), as a sync: files the server has unchanged are skipped, changed ones replaced where it allows; with -r, folders
    Put {
        /// Folder on the server to put them in (default: the top of what it serves)
        #[arg(long, value_name = "FOLDER")]
        to: Option<String>,
        /// Send folders with all they hold (as FOLDER/... beneath --to), their empty folders, modes and times too; symlinks, fifos and devices are not sent (each is named, exit 23)
        #[arg(short = 'r', long)]
        recursive: bool,
        /// Decide "unchanged" by digest (the server's, and one read of the local copy) instead of size and modification time
        #[arg(short = 'c', long)]
        checksum: bool,
        /// Send every file, even one the server has unchanged (a changed one is replaced anyway, where the server allows it: ftserver --allow-overwrite)
        #[arg(short = 'f', long)]
        force: bool,
        /// Continue an interrupted upload the server holds, once it proves its bytes are this file's (the default)
        #[arg(long, overrides_with = "no_resume")]
        resume: bool,
        /// Send every file whole, even if the server holds part of it from an interrupted upload
        #[arg(long, overrides_with = "resume")]
        no_resume: bool,
        /// Print a JSON summary on stdout (without -r, with each file's size, digest, resumed-from, or error)
        #[arg(long)]
        json: bool,
        /// Local files (each keeps its file name), or with -r folders
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Show the server's counters
    Stats,
    /// Load the server: requests/s, MB/s and latency percentiles (files are verified, not saved)
    Bench {
        /// Files to request, in turn
        #[arg(required = true)]
        names: Vec<OsString>,
        /// Connections, each on its own thread
        #[arg(long, default_value_t = 16)]
        conns: usize,
        /// How long to run (e.g. 5s, 1m)
        #[arg(long, default_value = "5s", value_parser = ft::human::parse_duration)]
        duration: Duration,
        /// Requests each connection keeps in flight (1: one at a time)
        #[arg(long, default_value_t = 1)]
        pipeline: usize,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout
    Completions { shell: clap_complete::Shell },
    /// Run list/get/stats interactively over one connection (also reads commands piped on stdin)
    Shell {
        /// Folder `get` saves into
        #[arg(short = 'o', long = "output", default_value = ft::client::DEFAULT_OUTPUT)]
        output: PathBuf,
    },
}

const EXIT_CODES: &str = "Exit codes:
  0    everything asked for succeeded
  1    the server refused a request (other than not found), or another failure
  2    usage: bad command, flag or name
  3    not found: no such file (or not a regular file) on the server
  4    connection: cannot connect, timed out, connection lost, malformed reply
  5    integrity: a file's bytes did not match the server's digest, or it changed while sent
  6    local I/O: cannot write a file or folder here, or read one to put
  7    the server's key is not the one expected (known-hosts file or --fingerprint): possible interception
  8    unauthorized: the server needs a token ($FT_TOKEN or --token-file), or refused the one given
  9    unknown server: not in the known-hosts file, and not accepted (--accept-new, or yes at the prompt)
  23   partial transfer: get -r or list met entries that were not transferred (devices, what the
       server could not read; nothing is deleted then), each named on stderr
  130  interrupted (Ctrl-C); partial downloads are kept as .part files; the server keeps
       an interrupted upload of 1 MiB or more, and put again continues it

Known servers are kept in $FT_KNOWN_HOSTS, else known_hosts in $XDG_CONFIG_HOME/ft (~/.config/ft).";

/// The progress bar on stderr: one for the whole command, bytes of this run only (bytes kept from
/// a resumed `.part` are not counted), its total growing as each file's size becomes known.
struct Bar {
    bar: indicatif::ProgressBar,
    files: std::sync::atomic::AtomicU64,
}

impl Bar {
    /// A bar if stderr is a terminal and not `--quiet`.
    fn new(quiet: bool) -> Option<Arc<Bar>> {
        if quiet || !io::stderr().is_terminal() {
            return None;
        }
        let bar = indicatif::ProgressBar::with_draw_target(Some(0), indicatif::ProgressDrawTarget::stderr());
        let style = indicatif::ProgressStyle::with_template(
            "{msg:30!} [{bar:25}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .map(|s| s.progress_chars("=> "));
        if let Ok(style) = style {
            bar.set_style(style);
        }
        Some(Arc::new(Bar { bar, files: Default::default() }))
    }
}

impl Progress for Bar {
    fn begin(&self, name: &Name, len: u64) {
        let n = self.files.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        self.bar.inc_length(len);
        self.bar.set_message(format!("[{n}] {name}"));
    }
    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }
}

/// Prints a note or error on stderr without tearing the progress bar.
/// The message is escaped whole: it may carry a server's text or a name, and nothing in it may act
/// on the terminal.
fn say(bar: Option<&Arc<Bar>>, message: &str) {
    let message = escape(message);
    match bar {
        Some(bar) => bar.bar.suspend(|| eprintln!("{message}")),
        None => eprintln!("{message}"),
    }
}

/// The shell's command in flight, if any: Ctrl-C cuts its connection instead of ending ftclient.
static BUSY: parking_lot::Mutex<Option<ft::client::Interrupter>> = parking_lot::Mutex::new(None);

/// Exit codes, as listed in `EXIT_CODES` and README.
mod code {
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const NOT_FOUND: u8 = 3;
    pub const CONNECTION: u8 = 4;
    pub const INTEGRITY: u8 = 5;
    pub const LOCAL_IO: u8 = 6;
    pub const KEY_MISMATCH: u8 = 7;
    pub const UNAUTHORIZED: u8 = 8;
    pub const UNKNOWN_HOST: u8 = 9;
    /// Some entries were not transferred (devices, what the server could not read): as rsync's 23.
    pub const PARTIAL: u8 = 23;
}

/// A mistake in how ftclient was called, found after clap's own checks.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Usage(String);

/// The exit code for a failure.
fn code_of(e: &ClientError) -> u8 {
    match e {
        ClientError::Server(reply) if matches!(reply.kind(), Some(ErrorCode::NotFound | ErrorCode::NotFile)) => {
            code::NOT_FOUND
        }
        // Changed while it was sent: what arrived could not be verified.
        ClientError::Server(reply) if reply.kind() == Some(ErrorCode::Changed) => code::INTEGRITY,
        ClientError::Server(reply) if reply.kind() == Some(ErrorCode::Unauthorized) => code::UNAUTHORIZED,
        ClientError::Server(_) => code::FAILED,
        ClientError::Integrity { .. } => code::INTEGRITY,
        ClientError::Local { .. } | ClientError::Unreadable { .. } => code::LOCAL_IO,
        ClientError::Connect { .. }
        | ClientError::Network(_)
        | ClientError::Timeout
        | ClientError::ShortBody { .. }
        | ClientError::Protocol(_)
        | ClientError::Tls { .. }
        | ClientError::Broken => code::CONNECTION,
        ClientError::HostKeyChanged(_) | ClientError::NotPinned(_) => code::KEY_MISMATCH,
        ClientError::TokenInPlainText { .. } => code::USAGE,
        ClientError::Unsayable(_) => code::FAILED,
        ClientError::UnknownHost { .. } => code::UNKNOWN_HOST,
        ClientError::Kept { .. } => 0,
    }
}

/// The exit code for an error that ended the command: from the first cause that tells.
fn code_of_error(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(client) = cause.downcast_ref::<ClientError>() {
            return code_of(client);
        }
        if cause.is::<Usage>() || cause.is::<ft::name::NameError>() {
            return code::USAGE;
        }
        if cause.is::<io::Error>() {
            return code::LOCAL_IO;
        }
    }
    code::FAILED
}

fn main() -> ExitCode {
    let args = Args::parse();
    let saves_parts = match &args.command {
        Command::Get { output, .. } => output != Path::new("-"),
        Command::Shell { .. } => true,
        _ => false,
    };
    if let Err(e) = exit_on_interrupt(saves_parts) {
        eprintln!("ftclient: cannot watch signals: {e}");
    }
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    match run(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            if e.chain().any(|c| matches!(c.downcast_ref(), Some(ClientError::HostKeyChanged(_)))) {
                eprint!("{KEY_CHANGED}");
            }
            eprintln!("ftclient: {}", escape(&ft::human::chain(e.chain())));
            ExitCode::from(code_of_error(&e))
        }
    }
}

/// Printed above the error when a server's key is not the one on record, as OpenSSH does.
const KEY_CHANGED: &str = "\
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!
Someone could be eavesdropping on you right now (man-in-the-middle attack)!
It is also possible that the server's key has just been changed.
";

/// How to speak TLS, from the flags: a person at a terminal is asked about an unknown server.
fn tls_options(args: &Args) -> TlsOptions {
    let mode = match (args.tls, args.plaintext) {
        (true, _) => TlsMode::Always,
        (_, true) => TlsMode::Never,
        _ => TlsMode::Auto,
    };
    let ask: Option<ft::client::trust::Ask> = (io::stdin().is_terminal() && io::stderr().is_terminal())
        .then(|| Arc::new(ask_about) as ft::client::trust::Ask);
    TlsOptions { mode, trust: Trust { known_hosts: None, accept_new: args.accept_new, pinned: args.fingerprint, ask } }
}

/// The token to present: the first line of `--token-file` (which no one else may read), else
/// `$FT_TOKEN`, else none.
fn read_token(file: Option<&Path>) -> anyhow::Result<Option<ft::wire::Secret>> {
    let token = match file {
        Some(path) => {
            use std::os::unix::fs::PermissionsExt;
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(Usage(format!(
                    "permissions {mode:04o} for {} are too open: it holds a token; run chmod 600 on it",
                    path.display()
                ))
                .into());
            }
            text.lines().next().unwrap_or("").trim().to_string()
        }
        None => std::env::var("FT_TOKEN").unwrap_or_default().trim().to_string(),
    };
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Usage("a token is one word, with no spaces or control characters".into()).into());
    }
    Ok((!token.is_empty()).then(|| ft::wire::Secret::new(token)))
}

/// Asks on the terminal whether to trust an unknown server, as ssh does.
fn ask_about(host: &str, fingerprint: &Fingerprint) -> bool {
    eprint!(
        "The authenticity of server '{}' can't be established.\nIts key fingerprint is {fingerprint}.\n\
         (`ftserver fingerprint` on the server prints it.)\nAre you sure you want to continue connecting (yes/no)? ",
        escape(host)
    );
    loop {
        let mut answer = String::new();
        if io::stdin().read_line(&mut answer).unwrap_or(0) == 0 {
            return false;
        }
        match answer.trim().to_ascii_lowercase().as_str() {
            "yes" => return true,
            "no" => return false,
            _ => eprint!("Please type 'yes' or 'no': "),
        }
    }
}

/// Runs the command; `Ok(code)` is 0, or the exit code of a failure already reported.
fn run(args: Args) -> anyhow::Result<u8> {
    let retry = Retry { left: args.retry, delay: args.retry_delay.0 };
    // An IPv6 address is written in brackets before its port, however it was given.
    let addr = match args.host.parse::<std::net::Ipv6Addr>() {
        Ok(v6) => format!("[{v6}]:{}", args.port),
        Err(_) => format!("{}:{}", args.host, args.port),
    };
    // One bar per command; the shell keeps its own notes instead (a bar would linger between prompts).
    let bar = Bar::new(args.quiet || matches!(args.command, Command::Shell { .. }));
    let tls = tls_options(&args);
    let token = read_token(args.token_file.as_deref())?;
    let connect = || {
        let mut client = Client::connect_with(&addr, args.timeout.0, &tls)?;
        if let Some(token) = &token {
            client.authenticate(token)?;
        }
        if let Some(bar) = &bar {
            client.set_progress(bar.clone());
        }
        Ok::<_, ClientError>(client)
    };
    match args.command {
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Args as clap::CommandFactory>::command(),
                "ftclient",
                &mut io::stdout(),
            );
            Ok(0)
        }
        Command::List { folder, json } => {
            let folder = match folder {
                Some(f) => arg_folder(&f)?,
                None => None,
            };
            let what = folder.as_ref().map_or("list".to_string(), |f| format!("list {f}"));
            // Sorted by name; past listing::SORT_UP_TO entries, printed as they arrive instead,
            // so a listing of any length takes bounded memory.
            let mut out = io::BufWriter::new(io::stdout().lock());
            let mut first = true;
            if json {
                out.write_all(b"[")?;
            }
            let mut sorting = listing::Sorting::new(|entry: &ListEntry| {
                if json {
                    out.write_all(if first { b"\n  " } else { b",\n  " })?;
                    serde_json::to_writer(&mut out, &entry_json(entry))?;
                } else {
                    print_entry(&mut out, entry)?;
                }
                first = false;
                Ok(())
            });
            let mut unreadable = 0u64;
            let listed = connect()?.list_each_reporting(
                folder.as_ref(),
                |entry| sorting.push(entry),
                |name, why| {
                    unreadable += 1;
                    eprintln!("ftclient: {name}: the server cannot read it: {}", escape(why));
                },
            );
            sorting.finish()?;
            if json && listed.is_ok() {
                out.write_all(b"\n]\n")?;
            }
            out.flush()?;
            listed.context(what)?;
            if unreadable > 0 {
                eprintln!("ftclient: the listing is incomplete: the server could not read {unreadable} entries");
                return Ok(code::PARTIAL);
            }
            Ok(0)
        }
        Command::Put { to, recursive, checksum, force, resume: _, no_resume, json, files } => {
            let to = match to.as_deref().map(|t| t.trim_end_matches('/')) {
                None | Some("" | ".") => None,
                Some(t) => Some(Name::parse(t).map_err(|e| Usage(format!("--to {}: {e}", escape(t))))?),
            };
            let options = PutOptions { force, resume: !no_resume, checksum };
            let mut retry = retry;
            let code =
                put(&connect, &mut retry, &files, to.as_ref(), recursive, options, json, args.quiet, bar.as_ref())?;
            if let Some(bar) = &bar {
                bar.bar.finish_and_clear();
            }
            Ok(code)
        }
        Command::Stats => {
            let mut out = io::stdout().lock();
            for (key, value) in connect()?.stats().context("stats")? {
                writeln!(out, "{} {value}", escape(&key))?;
            }
            Ok(0)
        }
        Command::Get {
            output,
            names,
            resume: _,
            no_resume,
            no_clobber,
            json,
            recursive,
            delete,
            dry_run,
            checksum,
            copy_links,
        } => {
            // Resuming is checked by the prefix digest, so it is the safe default.
            let resume = !no_resume;
            if recursive {
                if output == Path::new("-") {
                    return Err(Usage("-r saves into a folder; -o - writes one file".into()).into());
                }
                let tops = names.iter().map(|n| arg_folder(n)).collect::<anyhow::Result<Vec<_>>>()?;
                let dir = OutDir::create(&output)
                    .with_context(|| format!("cannot create {}", output.display()))?
                    .keep_existing(no_clobber);
                let options = TreeOptions { resume, delete, dry_run, checksum, copy_links, queue: None };
                // Listed on a second connection while the first fetches.
                let mut retry = retry;
                let code = get_tree(
                    &mut TreeSource::Connect(&connect, &mut retry),
                    bar.as_ref(),
                    &tops,
                    &dir,
                    options,
                    json,
                    args.quiet,
                )?;
                if let Some(bar) = &bar {
                    bar.bar.finish_and_clear();
                }
                return Ok(code);
            }
            let names = parse_names(&names)?;
            if output == Path::new("-") {
                if json {
                    return Err(Usage("--json and -o - both want stdout".into()).into());
                }
                if names.len() != 1 {
                    return Err(
                        Usage(format!("-o - writes one file to stdout; {} names were given", names.len())).into()
                    );
                }
                let mut client = connect()?;
                // Straight to the descriptor: `Stdout` is line-buffered, which splits every
                // write of a binary body at its last newline (two system calls for one).
                let mut out = std::fs::File::from(io::stdout().as_fd().try_clone_to_owned()?);
                client.get(&names[0], &mut out).with_context(|| names[0].to_string())?;
                if let Some(bar) = &bar {
                    bar.bar.finish_and_clear();
                }
                return Ok(0);
            }
            let dir = OutDir::create(&output)
                .with_context(|| format!("cannot create {}", output.display()))?
                .keep_existing(no_clobber);
            let mut retry = retry;
            let code = get_all(&connect, &names, &dir, resume, json, bar.as_ref(), args.quiet, &mut retry)?;
            if let Some(bar) = &bar {
                bar.bar.finish_and_clear();
            }
            Ok(code)
        }
        Command::Shell { output } => shell::run(&connect, &output, args.quiet),
        Command::Bench { names, conns, duration, pipeline } => {
            let names = parse_names(&names)?;
            let config = BenchConfig {
                addr,
                names,
                conns: conns.max(1),
                duration,
                pipeline,
                timeout: args.timeout.0,
                tls: tls.clone(),
                token: token.clone(),
            };
            let report = ft::client::bench::run(&config).context("bench")?;
            print_bench(&config, &report)?;
            Ok(if report.errors == 0 { 0 } else { code::FAILED })
        }
    }
}

/// Downloads the names over one connection, pipelined, reporting failures on stderr as they
/// happen; stops when the connection fails. With `--retry`, the names that failed for a
/// transient reason (or were never answered) are asked for again on a new connection, resuming
/// from their `.part`. The exit code is the first failure's in the order the names were given,
/// and `--json` lists the files in that order, whatever order they finished in (small files are
/// saved by writer threads, after larger ones streamed meanwhile).
#[allow(clippy::too_many_arguments)]
fn get_all(
    connect: &dyn Fn() -> Result<Client, ClientError>,
    names: &[Name],
    dir: &OutDir,
    resume: bool,
    json: bool,
    bar: Option<&Arc<Bar>>,
    quiet: bool,
    retry: &mut Retry,
) -> anyhow::Result<u8> {
    let started = std::time::Instant::now();
    let mut records: Vec<Option<(serde_json::Value, Option<u64>, u8)>> = vec![None; names.len()];
    let mut todo: Vec<usize> = (0..names.len()).collect();
    let mut retried = false;
    let left = loop {
        let mut client = retry.connect(connect, bar)?;
        let batch: Vec<Name> = todo.iter().map(|&i| names[i].clone()).collect();
        // Each name's place in the request; a name given twice takes its places in turn.
        let mut places: HashMap<&Name, VecDeque<usize>> = HashMap::new();
        for &i in &todo {
            places.entry(&names[i]).or_default().push_back(i);
        }
        let mut again = Vec::new();
        let left = client.download_all(&batch, dir, resume, |name, result| {
            let mut code = 0;
            let mut record = name_json(name);
            match &result {
                Ok(done) => {
                    if done.started_over && !quiet {
                        let note = "the partial copy did not match the server's file; downloaded it afresh";
                        say(bar, &format!("ftclient: {name}: {note}"));
                    }
                    if done.resumed_from > 0 && retried && !quiet {
                        say(bar, &format!("ftclient: {name}: resumed from byte {}", done.resumed_from));
                    }
                    record["status"] = "ok".into();
                    record["size"] = done.size.into();
                    record["xxh3"] = done.digest.to_string().into();
                    record["resumed_from"] = done.resumed_from.into();
                    record["started_over"] = done.started_over.into();
                }
                Err(ClientError::Kept { path }) => {
                    if !quiet {
                        say(bar, &format!("ftclient: {}: exists, kept (--no-clobber)", path.display()));
                    }
                    record["status"] = "kept".into();
                }
                Err(e) => {
                    code = code_of(e);
                    say(bar, &format!("ftclient: {name}: {e}"));
                    record["status"] = "error".into();
                    record["exit_code"] = code_of(e).into();
                    record["error"] = e.to_string().into();
                }
            }
            let place = places.get_mut(name).and_then(VecDeque::pop_front);
            if let Some(i) = place {
                if matches!(&result, Err(e) if transient_client(e)) {
                    again.push(i);
                }
                if let Some(slot) = records.get_mut(i) {
                    *slot = Some((record, result.ok().map(|d| d.size - d.resumed_from), code));
                }
            }
        });
        // Never answered: the connection ended first.
        again.extend(places.into_values().flatten());
        again.sort_unstable();
        if again.is_empty() {
            break left;
        }
        let why = format!("{} file(s) not fetched: the connection failed", again.len());
        if !retry.again(bar, &why) {
            break left;
        }
        retried = true;
        todo = again;
    };
    let records: Vec<_> = records.into_iter().flatten().collect();
    let failed = records.iter().map(|(_, _, code)| *code).find(|&code| code != 0).unwrap_or(0);
    if left > 0 {
        say(bar, &format!("ftclient: {left} more file(s) not fetched"));
    }
    if json {
        let received: u64 = records.iter().filter_map(|(_, bytes, _)| *bytes).sum();
        let files: Vec<_> = records.into_iter().map(|(record, _, _)| record).collect();
        let count = |status: &str| files.iter().filter(|f| f["status"] == status).count();
        print_json(&serde_json::json!({
            "ok": count("ok"),
            "kept": count("kept"),
            "failed": count("error"),
            "not_fetched": left,
            "bytes_received": received,
            "elapsed_secs": started.elapsed().as_secs_f64(),
            "files": files,
        }))?;
    }
    Ok(failed)
}

/// `put`: uploads the files (with `-r`, what the folders hold, and then their folders), as a sync:
/// what the server has unchanged is skipped, what changed is replaced where the server allows it;
/// reports failures on stderr as they happen; ends with a summary (stderr with `-r`, or `--json`
/// on stdout). The exit code is the first failure's.
#[allow(clippy::too_many_arguments)]
fn put(
    connect: &dyn Fn() -> Result<Client, ClientError>,
    retry: &mut Retry,
    files: &[PathBuf],
    to: Option<&Name>,
    recursive: bool,
    options: PutOptions,
    json: bool,
    quiet: bool,
    bar: Option<&Arc<Bar>>,
) -> anyhow::Result<u8> {
    let started = std::time::Instant::now();
    let mut first_failure = None;
    // What to send, each batch with the server's listing of its folder (for -r), and the folders.
    let mut batches = Vec::new();
    let mut folders = Vec::new();
    let mut client = retry.connect(connect, bar)?;
    if recursive {
        for folder in files {
            match std::fs::metadata(folder) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => return Err(Usage(format!("{}: not a folder (put -r sends folders)", folder.display())).into()),
                // As put of a missing file: the local file cannot be read (exit 6).
                Err(source) => return Err(ClientError::Unreadable { path: folder.clone(), source }.into()),
            }
            let tree = ft::client::local_tree(folder, to, |skip| match skip {
                Skipped::NotRegular(path, what) => {
                    first_failure.get_or_insert(code::PARTIAL);
                    say(
                        bar,
                        &format!("ftclient: {}: not sent: {what} (put -r sends files and folders)", path.display()),
                    );
                }
                Skipped::BadName(path, why) => {
                    first_failure.get_or_insert(code::LOCAL_IO);
                    say(bar, &format!("ftclient: {}: cannot be named on the server: {why}", path.display()));
                }
                Skipped::Unreadable(e) => {
                    first_failure.get_or_insert(code_of(&e));
                    say(bar, &format!("ftclient: {e}"));
                }
            });
            let Some(tree) = tree else { continue };
            let remote = client.remote_files(Some(&tree.top)).context("put -r: list")?;
            batches.push((tree.files, Some(remote)));
            folders.extend(tree.folders);
        }
    } else {
        let mut named = Vec::new();
        for local in files {
            let Some(file_name) = local.file_name() else {
                return Err(Usage(format!("{}: not a file name", local.display())).into());
            };
            let name = match to {
                Some(folder) => folder.join(file_name.as_encoded_bytes()),
                None => Name::from_os(file_name),
            };
            let name = name.map_err(|e| Usage(format!("{}: bad name: {e}", local.display())))?;
            named.push((ft::client::LocalFile::Path(local.clone()), name));
        }
        batches.push((named, None));
    }
    let mut records = Vec::new();
    let (mut sent, mut skipped, mut failed, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    for (mut files, remote) in batches {
        loop {
            // Files answered (stored, unchanged or refused for good) are not sent again after a retry.
            let mut answered = std::collections::HashSet::new();
            let result = client.put_sync(&files, remote.as_ref(), options, |name, result| {
                answered.insert(name.clone());
                let mut record = name_json(name);
                match result {
                    Ok(ft::client::Put::Unchanged) => {
                        skipped += 1;
                        if !recursive && !quiet {
                            say(
                                bar,
                                &format!("ftclient: {name}: unchanged on the server; not sent (--force sends it)"),
                            );
                        }
                        record["status"] = "unchanged".into();
                    }
                    Ok(ft::client::Put::Sent(done)) => {
                        sent += 1;
                        bytes += done.size - done.resumed_from;
                        if done.resumed_from > 0 && !quiet {
                            say(bar, &format!("ftclient: {name}: resumed from byte {}", done.resumed_from));
                        }
                        record["status"] = "ok".into();
                        record["size"] = done.size.into();
                        record["xxh3"] = done.digest.to_string().into();
                        record["resumed_from"] = done.resumed_from.into();
                    }
                    Err(e) => {
                        failed += 1;
                        first_failure.get_or_insert(code_of(&e));
                        say(bar, &format!("ftclient: put {name}: {}", client_chain(&e)));
                        record["status"] = "error".into();
                        record["exit_code"] = code_of(&e).into();
                        record["error"] = e.to_string().into();
                    }
                }
                if json && !recursive {
                    records.push(record);
                }
            });
            match result {
                Err(e) if transient_client(&e) && retry.again(bar, &client_chain(&e)) => {
                    files.retain(|(_, name)| !answered.contains(name));
                    client = retry.connect(connect, bar)?;
                }
                other => break other.context("put")?,
            }
        }
    }
    client
        .make_folders(&folders, |name, result| {
            if let Err(e) = result {
                failed += 1;
                first_failure.get_or_insert(code_of(&e));
                say(bar, &format!("ftclient: put {name}/: {}", client_chain(&e)));
            }
        })
        .context("put -r: folders")?;
    let secs = started.elapsed().as_secs_f64();
    if json {
        let mut summary = serde_json::json!({
            "sent": sent,
            "skipped": skipped,
            "failed": failed,
            "bytes_sent": bytes,
            "elapsed_secs": secs,
        });
        if !recursive {
            summary["files"] = records.into();
        }
        print_json(&summary)?;
    } else if recursive && !quiet {
        say(
            bar,
            &format!(
                "sent {sent} files ({}), skipped {skipped} unchanged, {failed} failed, in {secs:.2} s",
                ft::human::size(bytes)
            ),
        );
    }
    Ok(first_failure.unwrap_or(0))
}

/// What is left of `--retry` for this command, and the wait before the next.
#[derive(Clone, Copy)]
pub(crate) struct Retry {
    left: u32,
    delay: Duration,
}

impl Retry {
    /// After a transient failure `why`: says so, waits, and returns true; false if no retries
    /// are left.
    fn again(&mut self, bar: Option<&Arc<Bar>>, why: &str) -> bool {
        if self.left == 0 {
            return false;
        }
        say(bar, &format!("ftclient: {why}; retrying in {} ({} left)", Span(self.delay), self.left));
        std::thread::sleep(self.delay);
        self.left -= 1;
        self.delay = (self.delay * 2).min(Duration::from_secs(60));
        true
    }

    /// A new connection, tried again after a transient failure while retries are left.
    fn connect(
        &mut self,
        connect: &dyn Fn() -> Result<Client, ClientError>,
        bar: Option<&Arc<Bar>>,
    ) -> Result<Client, ClientError> {
        loop {
            match connect() {
                Err(e) if transient_client(&e) && self.again(bar, &client_chain(&e)) => continue,
                other => return other,
            }
        }
    }
}

/// Whether a failure may pass if tried again: the connection could not be made or was lost, a
/// reply did not come in time, or the server was busy.
fn transient_client(e: &ClientError) -> bool {
    match e {
        ClientError::Connect { .. }
        | ClientError::Network(_)
        | ClientError::Timeout
        | ClientError::ShortBody { .. }
        | ClientError::Broken
        | ClientError::Protocol(ft::wire::ProtocolError::Closed | ft::wire::ProtocolError::TruncatedLine) => true,
        ClientError::Server(reply) => reply.kind() == Some(ErrorCode::Busy),
        _ => false,
    }
}

/// A client error with its causes, as one line.
fn client_chain(e: &ClientError) -> String {
    ft::human::chain(std::iter::successors(Some(e as &(dyn std::error::Error + 'static)), |e| e.source()))
}

fn entry_json(e: &ListEntry) -> serde_json::Value {
    let mut value = serde_json::json!({
        "size": e.size,
        "mtime": ft::human::utc(e.mtime),
        "mtime_unix": e.mtime,
    });
    add_name(&mut value, &e.name);
    value
}

/// A JSON object for `name`: `{"name": ...}` with the name exactly (or, for a name that is not
/// UTF-8, its escaped form, and `"name_encoding": "percent"`).
fn name_json(name: &Name) -> serde_json::Value {
    let mut value = serde_json::json!({});
    add_name(&mut value, name);
    value
}

fn add_name(value: &mut serde_json::Value, name: &Name) {
    match name.to_str() {
        Some(s) => value["name"] = s.into(),
        None => {
            value["name"] = name.escaped().into_owned().into();
            value["name_encoding"] = "percent".into();
        }
    }
}

fn print_json(value: &serde_json::Value) -> io::Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)
}

/// A duration flag that must not be zero (a zero socket timeout means none to the system, and
/// nothing can connect in no time).
fn positive_span(s: &str) -> Result<Span, String> {
    match s.parse::<Span>()? {
        Span(d) if d.is_zero() => Err("must be more than 0 (e.g. 500ms, 30s)".into()),
        span => Ok(span),
    }
}

/// Where `get -r` fetches from: the shell's connection, or new connections, again after a
/// transient failure while `--retry` allows.
pub(crate) enum TreeSource<'a> {
    Shell(&'a mut Client),
    Connect(&'a dyn Fn() -> Result<Client, ClientError>, &'a mut Retry),
}

/// `get -r`: fetches the trees, reporting failures on stderr as they happen and, with
/// `--dry-run`, what would be done on stdout; ends with a summary (stderr, or `--json` on stdout).
/// With `--retry`, a fetch that lost its connection (or a file that did) starts again on new
/// connections: what is already here and unchanged is skipped, and what was cut off resumes.
fn get_tree(
    source: &mut TreeSource<'_>,
    bar: Option<&Arc<Bar>>,
    tops: &[Option<Name>],
    dir: &OutDir,
    options: TreeOptions,
    json: bool,
    quiet: bool,
) -> anyhow::Result<u8> {
    let started = std::time::Instant::now();
    // Counts over every attempt: what earlier ones fetched, later ones skip.
    let (mut fetched, mut bytes, mut deleted) = (0u64, 0u64, 0u64);
    let (summary, first_failure) = loop {
        let mut first_failure = None;
        let mut transient_failure = false;
        let mut printed = Ok(());
        // Dry-run lines on stdout (a whole line per write); stdout is not held locked, as the
        // listing reports from its own thread.
        let mut print = |line: String| {
            if printed.is_ok() {
                printed = writeln!(io::stdout(), "{line}");
            }
        };
        let report = |event: TreeEvent<'_>| match event {
            TreeEvent::Fetched(name, Err(e)) => {
                transient_failure |= transient_client(e);
                first_failure.get_or_insert(code_of(e));
                eprintln!("ftclient: {name}: {}", escape(&client_chain(e)));
            }
            TreeEvent::Fetched(_, Ok(_)) => {}
            TreeEvent::WouldFetch(name) => print(format!("fetch {name}")),
            TreeEvent::Made(name, kind) if options.dry_run => match kind {
                EntryKind::Symlink(target) => print(format!("link {name} -> {}", ft::escape::escape_bytes(target))),
                kind => print(format!("make {name} ({})", kind.describe())),
            },
            TreeEvent::Made(..) => {}
            TreeEvent::NotCopied(name, why) => {
                first_failure.get_or_insert(code::PARTIAL);
                eprintln!("ftclient: {name}: not copied: {}", escape(why));
            }
            TreeEvent::Deleted(name) if options.dry_run => print(format!("delete {}", ft::escape::escape_bytes(name))),
            TreeEvent::Deleted(name) => {
                if !quiet {
                    eprintln!("deleted {}", ft::escape::escape_bytes(name));
                }
            }
            TreeEvent::DeletionSkipped(n) => {
                first_failure.get_or_insert(code::PARTIAL);
                eprintln!("ftclient: the server could not read {n} entries: skipping deletion (nothing was deleted)");
            }
        };
        let summary = match source {
            TreeSource::Shell(client) => client.fetch_tree(tops, dir, options, report),
            // Listed on a second connection while the first fetches.
            TreeSource::Connect(connect, _) => connect().and_then(|mut fetcher| {
                let lister = connect()?;
                fetcher.fetch_tree_with(lister, tops, dir, options, report)
            }),
        };
        printed?;
        let why = match &summary {
            Err(e) if transient_client(e) => client_chain(e),
            Ok(_) if transient_failure => "a file was cut off".to_string(),
            _ => String::new(),
        };
        if let Ok(s) = &summary {
            fetched += s.fetched - s.failed.min(s.fetched);
            bytes += s.bytes;
            deleted += s.deleted;
        }
        let again = match source {
            TreeSource::Connect(_, retry) if !why.is_empty() => retry.again(bar, &why),
            _ => false,
        };
        if !again {
            let what = tops.iter().map(|t| t.as_ref().map_or(".".to_string(), Name::to_string)).collect::<Vec<_>>();
            break (summary.with_context(|| format!("get -r {}", what.join(" ")))?, first_failure);
        }
    };
    let skipped = summary.skipped.saturating_sub(fetched.saturating_sub(summary.fetched));
    let fetched = fetched.max(summary.fetched);
    let secs = started.elapsed().as_secs_f64();
    let verb = if options.dry_run { "would fetch" } else { "fetched" };
    if json {
        let value = serde_json::json!({
            "fetched": fetched,
            "skipped": skipped,
            "made": summary.made,
            "deleted": deleted,
            "deletion_skipped": summary.deletion_skipped,
            "failed": summary.failed,
            "not_copied": summary.not_copied,
            "bytes_received": bytes,
            "dry_run": options.dry_run,
            "elapsed_secs": secs,
        });
        writeln!(io::stdout(), "{value}")?;
    } else if !quiet {
        let made = if summary.made > 0 {
            format!(", {} {} links and specials", if options.dry_run { "would make" } else { "made" }, summary.made)
        } else {
            String::new()
        };
        let not_copied =
            if summary.not_copied > 0 { format!(", {} not copied", summary.not_copied) } else { String::new() };
        eprintln!(
            "{verb} {} files ({}), skipped {} unchanged{made}, {} {}, {} failed{not_copied}, in {secs:.2} s",
            fetched,
            ft::human::size(bytes),
            skipped,
            if options.dry_run { "would delete" } else { "deleted" },
            deleted,
            summary.failed,
        );
    }
    Ok(first_failure.unwrap_or(0))
}

fn parse_names(names: &[OsString]) -> anyhow::Result<Vec<Name>> {
    names.iter().map(|n| arg_name(n)).collect()
}

/// A name given on the command line (or typed in the shell): any bytes but NUL, a trailing `/`
/// (as tab completion leaves on a folder) ignored.
pub(crate) fn arg_name(arg: &OsStr) -> anyhow::Result<Name> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = arg.as_bytes();
    let trimmed = match bytes.iter().rposition(|&b| b != b'/') {
        Some(end) => &bytes[..=end],
        None => bytes,
    };
    Name::from_bytes(trimmed)
        .map_err(|e| Usage(format!("{}: bad name: {e}", ft::escape::escape_bytes(bytes))))
        .map_err(Into::into)
}

/// A folder given on the command line: [`arg_name`], or the whole server for `.` (or nothing).
pub(crate) fn arg_folder(arg: &OsStr) -> anyhow::Result<Option<Name>> {
    use std::os::unix::ffi::OsStrExt;
    match arg.as_bytes() {
        b"" | b"." | b"./" | b"/" => Ok(None),
        _ => arg_name(arg).map(Some),
    }
}

fn print_bench(config: &BenchConfig, r: &BenchReport) -> io::Result<()> {
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    let ms = |q: f64| r.latency(q).as_secs_f64() * 1000.0;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "connections {}, pipeline {}, {:.2} s, {} file(s)",
        config.conns,
        config.pipeline,
        secs,
        config.names.len()
    )?;
    writeln!(out, "requests    {} ({:.0}/s)", r.requests, r.requests as f64 / secs)?;
    writeln!(out, "received    {:.1} MB ({:.1} MB/s)", r.bytes as f64 / 1e6, r.bytes as f64 / 1e6 / secs)?;
    writeln!(out, "latency     p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms", ms(0.5), ms(0.99), ms(1.0))?;
    match &r.first_error {
        Some(first) => writeln!(out, "errors      {} (the first: {})", r.errors, escape(first)),
        None => writeln!(out, "errors      {}", r.errors),
    }
}

/// A table for people: human size, modification time (UTC), then the name, escaped.
fn print_entry(out: &mut impl Write, e: &ListEntry) -> io::Result<()> {
    writeln!(out, "{:>10}  {}  {}", ft::human::size(e.size), ft::human::utc(e.mtime), e.name)
}

/// Ctrl-C (or SIGTERM) ends the client at once with 128 + the signal (130 for Ctrl-C). Files being
/// downloaded into a folder stay as `.part`, which the next `get` continues, and the message says so
/// only when there can be any (`saves_parts`: not for `-o -`, `list` or `stats`).
fn exit_on_interrupt(saves_parts: bool) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        for signal in signals.forever() {
            // In the shell, Ctrl-C stops the command in flight and returns to the prompt.
            if signal == SIGINT
                && let Some(busy) = BUSY.lock().take()
            {
                busy.interrupt();
                continue;
            }
            if saves_parts {
                eprintln!(
                    "ftclient: interrupted; partial downloads are kept as .part files (the next get continues them)"
                );
            } else {
                eprintln!("ftclient: interrupted");
            }
            std::process::exit(128 + signal);
        }
    })?;
    Ok(())
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        let io = match cause.downcast_ref::<ClientError>() {
            Some(ClientError::Local { source, .. }) => Some(source),
            _ => cause.downcast_ref::<io::Error>(),
        };
        io.is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}
