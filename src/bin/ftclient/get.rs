//! `ftclient get`: files into a folder (pipelined over one connection, retried on new ones), one
//! file to stdout, or with `-r` folders kept in sync (`tree.rs`).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use ft::client::tree::TreeOptions;
use ft::client::{Client, ClientError, OutDir};
use ft::name::Name;

use crate::cli::GetArgs;
use crate::exit::{Usage, code_of};
use crate::names::{arg_folder, parse_names};
use crate::progress::{Bar, Moved, Voice, say};
use crate::report::{self, FileRecord, GetSummary, Status};
use crate::retry::{Retry, transient_client};
use crate::tree::{TreeSource, get_tree};

/// Runs `get` as its flags say.
pub(crate) fn run(
    connect: &(dyn Fn() -> Result<Client, ClientError> + Sync),
    bar: Option<&Arc<Bar>>,
    voice: Voice,
    mut retry: Retry,
    args: GetArgs,
) -> anyhow::Result<u8> {
    let GetArgs { output, names, no_resume, no_clobber, json, recursive, .. } = args;
    // Resuming is checked by the prefix digest, so it is the safe default.
    let resume = !no_resume;
    let to_stdout = output == Path::new("-");
    if recursive {
        if to_stdout {
            return Err(Usage("-r saves into a folder; -o - writes one file".into()).into());
        }
        let tops = names.iter().map(|n| arg_folder(n)).collect::<anyhow::Result<Vec<_>>>()?;
        let dir = out_dir(&output, no_clobber)?;
        let options = TreeOptions {
            resume,
            delete: args.delete,
            dry_run: args.dry_run,
            checksum: args.checksum,
            copy_links: args.copy_links,
            queue: None,
        };
        let code = get_tree(&mut TreeSource::Connect(connect, &mut retry), bar, &tops, &dir, options, json, voice)?;
        Bar::finish(bar);
        return Ok(code);
    }
    let names = parse_names(&names)?;
    if to_stdout {
        if json {
            return Err(Usage("--json and -o - both want stdout".into()).into());
        }
        if names.len() != 1 {
            return Err(Usage(format!("-o - writes one file to stdout; {} names were given", names.len())).into());
        }
        let mut client = connect()?;
        // Straight to the descriptor: `Stdout` is line-buffered, which splits every write of a
        // binary body at its last newline (two system calls for one).
        let mut out = std::fs::File::from(io::stdout().as_fd().try_clone_to_owned()?);
        client.get(&names[0], &mut out).with_context(|| names[0].to_string())?;
        Bar::finish(bar);
        return Ok(0);
    }
    let dir = out_dir(&output, no_clobber)?;
    let code = get_all(connect, &names, &dir, resume, json, bar, voice, &mut retry)?;
    Bar::finish(bar);
    Ok(code)
}

fn out_dir(output: &Path, no_clobber: bool) -> anyhow::Result<OutDir> {
    Ok(OutDir::create(output).with_context(|| format!("cannot create {}", output.display()))?.keep_existing(no_clobber))
}

/// A file's outcome: its record, the bytes received for it, taken from its older copy and
/// spared by compression, and its exit code.
type Outcome = (FileRecord, Option<[u64; 3]>, u8);

/// Downloads the names over one connection, pipelined, reporting failures on stderr as they
/// happen; stops when the connection fails. With `--retry`, the names that failed for a
/// transient reason (or were never answered) are asked for again on a new connection, resuming
/// from their `.part`. The exit code is the first failure's in the order the names were given,
/// and `--json` lists the files in that order, whatever order they finished in (small files are
/// saved by writer threads, after larger ones streamed meanwhile).
#[allow(clippy::too_many_arguments)]
fn get_all(
    connect: &(dyn Fn() -> Result<Client, ClientError> + Sync),
    names: &[Name],
    dir: &OutDir,
    resume: bool,
    json: bool,
    bar: Option<&Arc<Bar>>,
    voice: Voice,
    retry: &mut Retry,
) -> anyhow::Result<u8> {
    let started = std::time::Instant::now();
    let mut outcomes: Vec<Option<Outcome>> = vec![None; names.len()];
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
            let record = match &result {
                Ok(done) => {
                    if done.started_over && !voice.quiet {
                        let note = "the partial copy did not match the server's file; downloaded it afresh";
                        say(bar, &format!("ftclient: {name}: {note}"));
                    }
                    if done.resumed_from > 0 && retried && !voice.quiet {
                        say(bar, &format!("ftclient: {name}: resumed from byte {}", done.resumed_from));
                    }
                    voice.moved(bar, "got", name, Moved::downloaded(done));
                    FileRecord::ok(name, done.size, done.digest, done.resumed_from).downloaded(
                        done.started_over,
                        done.reused,
                        done.compression_saved,
                    )
                }
                Err(ClientError::Kept { path }) => {
                    if !voice.quiet {
                        say(bar, &format!("ftclient: {}: exists, kept (--no-clobber)", path.display()));
                    }
                    FileRecord::kept(name)
                }
                Err(e) => {
                    code = code_of(e);
                    say(bar, &format!("ftclient: {name}: {e}"));
                    FileRecord::failed(name, e)
                }
            };
            let place = places.get_mut(name).and_then(VecDeque::pop_front);
            if let Some(i) = place {
                if matches!(&result, Err(e) if transient_client(e)) {
                    again.push(i);
                }
                if let Some(slot) = outcomes.get_mut(i) {
                    *slot = Some((record, result.ok().map(|d| [d.moved(), d.reused, d.compression_saved]), code));
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
    let outcomes: Vec<_> = outcomes.into_iter().flatten().collect();
    let failed = outcomes.iter().map(|(_, _, code)| *code).find(|&code| code != 0).unwrap_or(0);
    if left > 0 {
        say(bar, &format!("ftclient: {left} more file(s) not fetched"));
    }
    if json {
        let total = |i: usize| -> u64 { outcomes.iter().filter_map(|(_, bytes, _)| bytes.map(|b| b[i])).sum() };
        let (bytes_received, bytes_reused, bytes_compression_saved) = (total(0), total(1), total(2));
        let files: Vec<_> = outcomes.into_iter().map(|(record, _, _)| record).collect();
        let count = |status| files.iter().filter(|f| f.status == status).count();
        report::print_pretty(&GetSummary {
            ok: count(Status::Ok),
            kept: count(Status::Kept),
            failed: count(Status::Error),
            not_fetched: left,
            bytes_received,
            bytes_reused,
            bytes_compression_saved,
            elapsed_secs: started.elapsed().as_secs_f64(),
            files,
        })?;
    }
    Ok(failed)
}
