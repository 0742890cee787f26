//! ftclient's command line: the global flags, the commands and theirs, and the exit codes its help
//! lists.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ft::fingerprint::Fingerprint;
use ft::human::Span;

/// Download files from an ftserver, and upload files to one.
#[derive(Parser, Debug)]
#[command(version, after_help = EXIT_CODES)]
pub(crate) struct Args {
    /// Server host name or address
    #[arg(long, global = true, env = "FT_HOST", default_value = ft::client::DEFAULT_HOST)]
    pub(crate) host: String,
    /// Server port
    #[arg(long, global = true, env = "FT_PORT", default_value_t = ft::DEFAULT_PORT)]
    pub(crate) port: u16,
    /// Give up connecting, or waiting for the server, after this long (e.g. 10s, 2m; more than 0)
    #[arg(long, global = true, default_value_t = Span(ft::client::DEFAULT_TIMEOUT), value_parser = positive_span)]
    pub(crate) timeout: Span,
    /// Print nothing but errors (no progress bar, no notes)
    #[arg(short, long, global = true)]
    pub(crate) quiet: bool,
    /// After each file, say on stderr what it moved: its size, the bytes that crossed the wire, and what delta, compression and a resumed .part spared
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub(crate) verbose: bool,
    /// Retry a get or put up to N times after a transient failure (connection refused or lost, a timeout, the server busy), waiting --retry-delay, doubled each time; downloads resume from their .part, uploads from what the server holds, get -r and put go on with what is left
    #[arg(long, global = true, value_name = "N", default_value_t = 0)]
    pub(crate) retry: u32,
    /// The first wait before a retry (doubled after each, up to a minute)
    #[arg(long, global = true, value_name = "AGE", default_value = "1s")]
    pub(crate) retry_delay: Span,
    /// Speak TLS on loopback too (it is always spoken to other hosts)
    #[arg(long, global = true, conflicts_with = "plaintext")]
    pub(crate) tls: bool,
    /// Speak plain text even to another host: nothing is encrypted or authenticated
    #[arg(long, global = true)]
    pub(crate) plaintext: bool,
    /// Trust a server not seen before and add it to the known-hosts file (as ssh's StrictHostKeyChecking=accept-new)
    #[arg(long, global = true)]
    pub(crate) accept_new: bool,
    /// Trust only a server whose key has this fingerprint (as `ftserver fingerprint` prints it), for this run
    #[arg(long, global = true, value_name = "SHA256:...", value_parser = parse_fingerprint)]
    pub(crate) fingerprint: Option<Fingerprint>,
    /// Read the token to present from this file (else from $FT_TOKEN); never given on the command line, which ps shows
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) token_file: Option<PathBuf>,
    /// Send a file the receiving side has an older copy of (a local one for get, the server's for put) as a delta against it: only what changed crosses the wire (the default, except with a server on this machine, where reading it whole is faster)
    #[arg(long, global = true, overrides_with = "whole_file")]
    pub(crate) delta: bool,
    /// Always send files whole, never as a delta (as rsync's -W)
    #[arg(short = 'W', long, global = true, overrides_with = "delta")]
    pub(crate) whole_file: bool,
    /// Compress transfers with zstd where it pays (files that are already compressed, and data that does not shrink, go as they are; uploads from 256 KiB): the default, except with a server on this machine
    #[arg(short = 'z', long, global = true, overrides_with = "no_compress")]
    pub(crate) compress: bool,
    /// Never compress transfers
    #[arg(long, global = true, overrides_with = "compress")]
    pub(crate) no_compress: bool,
    /// TCP congestion control for this client's connections (it sends the uploads): bbr by default where the system allows it, else the system's; a NAME given here that cannot be set is warned of; "system" leaves the system's default
    #[arg(long, global = true, value_name = "NAME")]
    pub(crate) congestion: Option<String>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// List the files the server offers (size, modification time, name)
    List {
        /// Only the files beneath this folder
        folder: Option<OsString>,
        /// Machine-readable output: a JSON array of {name, size (bytes), mtime (RFC 3339 UTC), mtime_unix}
        #[arg(long)]
        json: bool,
    },
    /// Download one or more files over one connection; with -r, folders, kept in sync
    Get(GetArgs),
    /// Upload files to the server over one connection (it must run with --allow-upload), as a sync: files the server has unchanged are skipped, changed ones replaced where it allows; with -r, folders
    Put(PutArgs),
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

pub(crate) const EXIT_CODES: &str = "Exit codes:
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

fn parse_fingerprint(s: &str) -> Result<Fingerprint, String> {
    Fingerprint::parse(s)
        .ok_or_else(|| "expected SHA256: and 43 characters of base64, as `ftserver fingerprint` prints".into())
}

/// A duration flag that must not be zero (a zero socket timeout means none to the system, and
/// nothing can connect in no time).
fn positive_span(s: &str) -> Result<Span, String> {
    match s.parse::<Span>()? {
        Span(d) if d.is_zero() => Err("must be more than 0 (e.g. 500ms, 30s)".into()),
        span => Ok(span),
    }
}

// `get`'s flags and names (its help is the variant's doc comment).
#[derive(clap::Args, Debug)]
pub(crate) struct GetArgs {
    /// Folder to save into, keeping sub-folders (created if missing); '-' writes one file to stdout
    #[arg(short = 'o', long = "output", default_value = ft::client::DEFAULT_OUTPUT)]
    pub(crate) output: PathBuf,
    /// Continue from an existing NAME.part if the server confirms its bytes, else start over (the default)
    #[arg(long, overrides_with = "no_resume")]
    pub(crate) resume: bool,
    /// Start every file over, discarding an existing NAME.part
    #[arg(long, overrides_with = "resume")]
    pub(crate) no_resume: bool,
    /// Keep files that already exist locally (they are skipped, and said so) instead of replacing them
    #[arg(short = 'n', long)]
    pub(crate) no_clobber: bool,
    /// Print a JSON summary on stdout: each file's size, digest, resumed-from, or error; totals; elapsed
    #[arg(long)]
    pub(crate) json: bool,
    /// Fetch folders with all they hold ('.' is the whole server), skipping files whose local copy has the same size and modification time
    #[arg(short = 'r', long)]
    pub(crate) recursive: bool,
    /// With -r: remove local files and folders beneath the fetched folders that the server does not have
    #[arg(long, requires = "recursive")]
    pub(crate) delete: bool,
    /// With -r: print what would be fetched and removed ("fetch NAME", "delete NAME"), and change nothing
    #[arg(long, requires = "recursive")]
    pub(crate) dry_run: bool,
    /// With -r: compare files by digest (the server's, and one read of the local copy) instead of size and time
    #[arg(short = 'c', long, requires = "recursive")]
    pub(crate) checksum: bool,
    /// With -r: follow symlinks on the server (inside what it serves) and fetch what they lead to, as rsync -L; without it, each symlink arrives as a symlink
    #[arg(short = 'L', long, requires = "recursive")]
    pub(crate) copy_links: bool,
    /// Names as `list` shows them (with -r, folders too; a trailing / is ignored)
    #[arg(required = true)]
    pub(crate) names: Vec<OsString>,
}

// `put`'s flags and files (its help is the variant's doc comment).
#[derive(clap::Args, Debug)]
pub(crate) struct PutArgs {
    /// Folder on the server to put them in (default: the top of what it serves)
    #[arg(long, value_name = "FOLDER")]
    pub(crate) to: Option<String>,
    /// Send folders with all they hold (as FOLDER/... beneath --to), their empty folders, modes and times too; symlinks, fifos and devices are not sent (each is named, exit 23)
    #[arg(short = 'r', long)]
    pub(crate) recursive: bool,
    /// Decide "unchanged" by digest (the server's, and one read of the local copy) instead of size and modification time
    #[arg(short = 'c', long)]
    pub(crate) checksum: bool,
    /// Send every file, even one the server has unchanged (a changed one is replaced anyway, where the server allows it: ftserver --allow-overwrite)
    #[arg(short = 'f', long)]
    pub(crate) force: bool,
    /// Continue an interrupted upload the server holds, once it proves its bytes are this file's (the default)
    #[arg(long, overrides_with = "no_resume")]
    pub(crate) resume: bool,
    /// Send every file whole, even if the server holds part of it from an interrupted upload
    #[arg(long, overrides_with = "resume")]
    pub(crate) no_resume: bool,
    /// Print a JSON summary on stdout (without -r, with each file's size, digest, resumed-from, or error)
    #[arg(long)]
    pub(crate) json: bool,
    /// Local files (each keeps its file name), or with -r folders
    #[arg(required = true)]
    pub(crate) files: Vec<PathBuf>,
}
