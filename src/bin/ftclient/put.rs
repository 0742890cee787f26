//! `ftclient put`: files (with `-r`, folders) uploaded as a sync, skipping what the server has
//! unchanged, retried on new connections.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use ft::client::{Client, ClientError, PutOptions, Skipped};
use ft::name::Name;
use ft::wire::escape;

use crate::cli::PutArgs;
use crate::exit::{self, Usage, code_of};
use crate::progress::{Bar, Moved, Voice, say};
use crate::report::{self, FileRecord, PutSummary};
use crate::retry::{Retry, client_chain, transient_client};

/// Runs `put` as its flags say.
pub(crate) fn run(
    connect: &(dyn Fn() -> Result<Client, ClientError> + Sync),
    bar: Option<&Arc<Bar>>,
    voice: Voice,
    mut retry: Retry,
    args: PutArgs,
) -> anyhow::Result<u8> {
    let PutArgs { to, recursive, checksum, force, resume: _, no_resume, json, files } = args;
    let to = match to.as_deref().map(|t| t.trim_end_matches('/')) {
        None | Some("" | ".") => None,
        Some(t) => Some(Name::parse(t).map_err(|e| Usage(format!("--to {}: {e}", escape(t))))?),
    };
    let options = PutOptions { force, resume: !no_resume, checksum };
    let code = put_files(connect, &mut retry, &files, to.as_ref(), recursive, options, json, voice, bar)?;
    Bar::finish(bar);
    Ok(code)
}

/// `put`: uploads the files (with `-r`, what the folders hold, and then their folders), as a sync:
/// what the server has unchanged is skipped, what changed is replaced where the server allows it;
/// reports failures on stderr as they happen; ends with a summary (stderr with `-r`, or `--json`
/// on stdout). The exit code is the first failure's.
#[allow(clippy::too_many_arguments)]
fn put_files(
    connect: &(dyn Fn() -> Result<Client, ClientError> + Sync),
    retry: &mut Retry,
    files: &[PathBuf],
    to: Option<&Name>,
    recursive: bool,
    options: PutOptions,
    json: bool,
    voice: Voice,
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
                    first_failure.get_or_insert(exit::PARTIAL);
                    say(
                        bar,
                        &format!("ftclient: {}: not sent: {what} (put -r sends files and folders)", path.display()),
                    );
                }
                Skipped::BadName(path, why) => {
                    first_failure.get_or_insert(exit::LOCAL_IO);
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
    let (mut reused, mut compression_saved) = (0u64, 0u64);
    for (mut files, remote) in batches {
        loop {
            // Files answered (stored, unchanged or refused for good) are not sent again after a retry.
            let mut answered = std::collections::HashSet::new();
            let result = client.put_sync(&files, remote.as_ref(), options, |name, result| {
                answered.insert(name.clone());
                let record = match result {
                    Ok(ft::client::Put::Unchanged) => {
                        skipped += 1;
                        if !recursive && !voice.quiet {
                            say(
                                bar,
                                &format!("ftclient: {name}: unchanged on the server; not sent (--force sends it)"),
                            );
                        }
                        FileRecord::unchanged(name)
                    }
                    Ok(ft::client::Put::Sent(done)) => {
                        sent += 1;
                        bytes += done.moved();
                        reused += done.reused;
                        compression_saved += done.compression_saved;
                        if done.resumed_from > 0 && !voice.quiet {
                            say(bar, &format!("ftclient: {name}: resumed from byte {}", done.resumed_from));
                        }
                        voice.moved(bar, "put", name, Moved::uploaded(&done));
                        FileRecord::ok(name, done.size, done.digest, done.resumed_from)
                            .spared(done.reused, done.compression_saved)
                    }
                    Err(e) => {
                        failed += 1;
                        first_failure.get_or_insert(code_of(&e));
                        say(bar, &format!("ftclient: put {name}: {}", client_chain(&e)));
                        FileRecord::failed(name, &e)
                    }
                };
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
        let files = (!recursive).then_some(records);
        let summary = PutSummary {
            sent,
            skipped,
            failed,
            bytes_sent: bytes,
            bytes_reused: reused,
            bytes_compression_saved: compression_saved,
            elapsed_secs: secs,
            files,
        };
        report::print_pretty(&summary)?;
    } else if recursive && !voice.quiet {
        say(
            bar,
            &format!(
                "sent {sent} files ({}), skipped {skipped} unchanged, {failed} failed, in {secs:.2} s",
                Moved::summed(bytes, reused, compression_saved)
            ),
        );
    }
    Ok(first_failure.unwrap_or(0))
}
