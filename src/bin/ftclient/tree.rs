//! `ftclient get -r`: folders fetched and kept in sync, from the command line or the shell.

use std::io::{self, Write};
use std::sync::Arc;

use anyhow::Context;
use ft::client::tree::{TreeEvent, TreeOptions};
use ft::client::{Client, ClientError, OutDir};
use ft::name::Name;
use ft::wire::{EntryKind, escape};

use crate::exit::{self, code_of};
use crate::progress::{Bar, Moved, Voice};
use crate::report::{self, TreeSummary};
use crate::retry::{Retry, client_chain, transient_client};

/// Where `get -r` fetches from: the shell's connection, or new connections, again after a
/// transient failure while `--retry` allows.
pub(crate) enum TreeSource<'a> {
    Shell(&'a mut Client),
    Connect(&'a (dyn Fn() -> Result<Client, ClientError> + Sync), &'a mut Retry),
}

/// `get -r`: fetches the trees, reporting failures on stderr as they happen and, with
/// `--dry-run`, what would be done on stdout; ends with a summary (stderr, or `--json` on stdout).
/// With `--retry`, a fetch that lost its connection (or a file that did) starts again on new
/// connections: what is already here and unchanged is skipped, and what was cut off resumes.
pub(crate) fn get_tree(
    source: &mut TreeSource<'_>,
    bar: Option<&Arc<Bar>>,
    tops: &[Option<Name>],
    dir: &OutDir,
    options: TreeOptions,
    json: bool,
    voice: Voice,
) -> anyhow::Result<u8> {
    let started = std::time::Instant::now();
    // Counts over every attempt: what earlier ones fetched, later ones skip.
    let (mut fetched, mut bytes, mut reused, mut squeezed, mut deleted) = (0u64, 0u64, 0u64, 0u64, 0u64);
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
            TreeEvent::Fetched(name, Ok(done)) => {
                voice.moved(bar, "got", name, Moved::downloaded(done));
            }
            TreeEvent::WouldFetch(name) => print(format!("fetch {name}")),
            TreeEvent::Made(name, kind) if options.dry_run => match kind {
                EntryKind::Symlink(target) => print(format!("link {name} -> {}", ft::escape::escape_bytes(target))),
                kind => print(format!("make {name} ({})", kind.describe())),
            },
            TreeEvent::Made(..) => {}
            TreeEvent::NotCopied(name, why) => {
                first_failure.get_or_insert(exit::PARTIAL);
                eprintln!("ftclient: {name}: not copied: {}", escape(why));
            }
            TreeEvent::Deleted(name) if options.dry_run => print(format!("delete {}", ft::escape::escape_bytes(name))),
            TreeEvent::Deleted(name) => {
                if !voice.quiet {
                    eprintln!("deleted {}", ft::escape::escape_bytes(name));
                }
            }
            TreeEvent::DeletionSkipped(n) => {
                first_failure.get_or_insert(exit::PARTIAL);
                eprintln!("ftclient: the server could not read {n} entries: skipping deletion (nothing was deleted)");
            }
        };
        let summary = match source {
            TreeSource::Shell(client) => client.fetch_tree(tops, dir, options, report),
            // Listed on a second connection while the first fetches; the two connect at once
            // (one round trip for both, not one each).
            TreeSource::Connect(connect, _) => {
                let connect: &(dyn Fn() -> Result<Client, ClientError> + Sync) = *connect;
                let (fetcher, lister) = std::thread::scope(|s| {
                    let lister = s.spawn(connect);
                    (connect(), lister.join().unwrap_or(Err(ClientError::Broken)))
                });
                fetcher.and_then(|mut fetcher| fetcher.fetch_tree_with(lister?, tops, dir, options, report))
            }
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
            reused += s.reused;
            squeezed += s.compression_saved;
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
        report::print_line(&TreeSummary {
            fetched,
            skipped,
            made: summary.made,
            deleted,
            deletion_skipped: summary.deletion_skipped,
            failed: summary.failed,
            not_copied: summary.not_copied,
            bytes_received: bytes,
            bytes_reused: reused,
            bytes_compression_saved: squeezed,
            dry_run: options.dry_run,
            elapsed_secs: secs,
        })?;
    } else if !voice.quiet {
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
            Moved::summed(bytes, reused, squeezed),
            skipped,
            if options.dry_run { "would delete" } else { "deleted" },
            deleted,
            summary.failed,
        );
    }
    Ok(first_failure.unwrap_or(0))
}
