//! `ftclient shell`: list, get and stats over one connection, from a person at a terminal (line
//! editing, history, tab completion of the server's file names) or from a script on stdin (plain
//! lines, no prompt).

use std::io::{self, BufRead, IsTerminal};
use std::path::Path;

use anyhow::Context;
use ft::client::{Client, ClientError, OutDir};
use ft::wire::escape;

use crate::exit::{Usage, code_of_error};
use crate::listing::print_entry;
use crate::names::{arg_folder, arg_name};
use crate::progress::{Bar, Voice};
use crate::signals::BUSY;
use crate::tree::{TreeSource, get_tree};

/// Most names the shell remembers for Tab completion.
const COMPLETION_NAMES: usize = 100_000;

const SHELL_HELP: &str = "commands:
  list [FOLDER]   list the server's files
  get NAME        download NAME (the rest of the line, spaces included)
  get -r FOLDER   fetch FOLDER with all it holds, skipping unchanged files (. for everything)
  stats           show the server's counters
  help            this text
  quit            leave (end of input does too)";

/// The interactive loop. Carries on after a failed command; returns the first failure's code.
///
/// A connection the server closed (its idle timeout, a restart) is opened again and the command
/// tried once more. Ctrl-C during a command cuts that command's connection (a download keeps its
/// `.part`) and returns to the prompt; the next command connects afresh.
pub(crate) fn run(
    connect: &(dyn Fn() -> Result<Client, ClientError> + Sync),
    output: &Path,
    voice: Voice,
) -> anyhow::Result<u8> {
    let mut client = connect()?;
    let mut lines = Lines::new(&mut client)?;
    let mut failed = 0;
    loop {
        let Some(line) = lines.next()? else { break };
        let line = line.trim_end_matches('\r');
        let (verb, arg) = line.trim_start().split_once(' ').unwrap_or((line.trim_start(), ""));
        match verb {
            "" => continue,
            "quit" | "exit" => break,
            "help" | "?" => {
                println!("{SHELL_HELP}");
                continue;
            }
            _ => {}
        }
        let mut result = attempt(connect, &mut client, verb, arg, output, voice, &mut lines);
        if let Err(Attempt::Failed(_)) = &result
            && !client.is_usable()
        {
            // The server may have closed the connection while the shell sat idle: once more,
            // on a new one.
            result = match connect() {
                Ok(fresh) => {
                    client = fresh;
                    attempt(connect, &mut client, verb, arg, output, voice, &mut lines)
                }
                Err(e) => Err(Attempt::Failed(e.into())),
            };
        }
        match result {
            Ok(()) => {}
            Err(Attempt::Interrupted(e)) => {
                eprintln!("ftclient: {}", escape(&ft::human::chain(e.chain())));
                eprintln!("ftclient: interrupted; a partial download is kept as .part (get continues it)");
            }
            Err(Attempt::Failed(e)) => {
                if failed == 0 {
                    failed = code_of_error(&e);
                }
                eprintln!("ftclient: {}", escape(&ft::human::chain(e.chain())));
            }
        }
    }
    if client.is_usable() {
        client.quit().ok();
    }
    Ok(failed)
}

/// How a command ended, when it did not succeed.
enum Attempt {
    Failed(anyhow::Error),
    /// Ctrl-C cut it short.
    Interrupted(anyhow::Error),
}

/// Runs one command, on a fresh connection if the last one was lost, with Ctrl-C set to cut it.
fn attempt(
    connect: &(dyn Fn() -> Result<Client, ClientError> + Sync),
    client: &mut Client,
    verb: &str,
    arg: &str,
    output: &Path,
    voice: Voice,
    lines: &mut Lines,
) -> Result<(), Attempt> {
    if !client.is_usable() {
        *client = connect().map_err(|e| Attempt::Failed(e.into()))?;
    }
    *BUSY.lock() = Some(client.interrupter());
    let result = match verb {
        "list" | "ls" => shell_list(client, arg, lines),
        "get" => match arg.strip_prefix("-r ") {
            Some(folder) => shell_get_tree(client, folder.trim_start(), output, voice),
            None => shell_get(client, arg, output, voice),
        },
        "stats" => client.stats().map_err(Into::into).map(|stats| {
            for (key, value) in stats {
                println!("{} {value}", escape(&key));
            }
        }),
        other => Err(Usage(format!("unknown command '{}' (try help)", escape(other))).into()),
    };
    // The Ctrl-C handler takes the interrupter when it uses it.
    let interrupted = BUSY.lock().take().is_none();
    match result {
        Ok(()) => Ok(()),
        Err(e) if interrupted => Err(Attempt::Interrupted(e)),
        Err(e) => Err(Attempt::Failed(e)),
    }
}

fn shell_list(client: &mut Client, folder: &str, lines: &mut Lines) -> anyhow::Result<()> {
    let folder = arg_folder(std::ffi::OsStr::new(folder))?;
    // Sorted as `ftclient list` sorts it; a full listing also feeds Tab completion, up to
    // COMPLETION_NAMES.
    let mut out = io::stdout().lock();
    let mut names = Vec::new();
    let mut sorting = crate::listing::Sorting::new(|entry: &ft::wire::ListEntry| print_entry(&mut out, entry));
    let listed = client.list_each(folder.as_ref(), |entry| {
        if folder.is_none() && names.len() < COMPLETION_NAMES {
            names.push(entry.name.to_string());
        }
        sorting.push(entry)
    });
    sorting.finish()?;
    match &folder {
        Some(f) => listed.with_context(|| format!("list {f}"))?,
        None => listed?,
    };
    if folder.is_none() {
        lines.learn(names);
    }
    Ok(())
}

fn shell_get(client: &mut Client, name: &str, output: &Path, voice: Voice) -> anyhow::Result<()> {
    let name = arg_name(std::ffi::OsStr::new(name))?;
    let dir = OutDir::create(output).with_context(|| format!("cannot create {}", output.display()))?;
    // Resumes an existing .part, as `ftclient get` does (the server checks its prefix digest),
    // with a progress bar on a terminal, as `ftclient get` draws.
    let bar = Bar::new(voice.quiet);
    if let Some(bar) = &bar {
        client.set_progress(bar.clone());
    }
    let done = client.download(&name, &dir, true);
    client.clear_progress();
    Bar::finish(bar.as_ref());
    let done = done.with_context(|| name.to_string())?;
    if !voice.quiet {
        let saved = dir.path().join(name.as_path());
        eprintln!("saved {} ({} bytes)", escape(&saved.display().to_string()), done.size);
    }
    Ok(())
}

/// `get -r FOLDER` in the shell: as `ftclient get -r` does, its summary on stderr.
fn shell_get_tree(client: &mut Client, folder: &str, output: &Path, voice: Voice) -> anyhow::Result<()> {
    let top = arg_folder(std::ffi::OsStr::new(folder))?;
    let dir = OutDir::create(output).with_context(|| format!("cannot create {}", output.display()))?;
    let options = ft::client::tree::TreeOptions { resume: true, ..Default::default() };
    let code = get_tree(&mut TreeSource::Shell(client), None, &[top], &dir, options, false, voice)?;
    if code != 0 {
        anyhow::bail!("get -r {}: some files failed", escape(folder));
    }
    Ok(())
}

/// Where commands come from: a line editor on a terminal, plain lines otherwise.
enum Lines {
    Terminal(Box<rustyline::Editor<Completion, rustyline::history::DefaultHistory>>),
    Piped(io::Lines<io::StdinLock<'static>>),
}

impl Lines {
    /// A line editor if stdin is a terminal, primed with the server's file names for completion.
    fn new(client: &mut Client) -> anyhow::Result<Lines> {
        if !io::stdin().is_terminal() {
            return Ok(Lines::Piped(io::stdin().lock().lines()));
        }
        // Like bash: Tab completes as far as the candidates agree, a second Tab lists them.
        let config = rustyline::Config::builder().completion_type(rustyline::CompletionType::List).build();
        let mut editor = rustyline::Editor::with_config(config).context("cannot set up line editing")?;
        let mut names = Vec::new();
        let listed = client.list_each(None, |entry| {
            if names.len() < COMPLETION_NAMES {
                names.push(entry.name.to_string());
            }
            Ok(())
        });
        editor.set_helper(Some(Completion { names: if listed.is_ok() { names } else { Vec::new() } }));
        Ok(Lines::Terminal(Box::new(editor)))
    }

    /// The next command line; `None` at the end of input (Ctrl-D on a terminal).
    fn next(&mut self) -> anyhow::Result<Option<String>> {
        match self {
            Lines::Piped(lines) => Ok(lines.next().transpose()?),
            Lines::Terminal(editor) => loop {
                match editor.readline("ft> ") {
                    Ok(line) => {
                        if !line.trim().is_empty() {
                            let _ = editor.add_history_entry(line.as_str());
                        }
                        return Ok(Some(line));
                    }
                    // Ctrl-C at the prompt drops the line, as in a shell.
                    Err(rustyline::error::ReadlineError::Interrupted) => continue,
                    Err(rustyline::error::ReadlineError::Eof) => return Ok(None),
                    Err(e) => return Err(e.into()),
                }
            },
        }
    }

    /// Remembers the server's file names after a full `list`, for completion.
    fn learn(&mut self, names: Vec<String>) {
        if let Lines::Terminal(editor) = self
            && let Some(helper) = editor.helper_mut()
        {
            helper.names = names;
        }
    }
}

/// Tab completion: commands first, then the server's file names after `get` or `list`.
#[derive(rustyline::Helper, rustyline::Hinter, rustyline::Highlighter, rustyline::Validator)]
struct Completion {
    names: Vec<String>,
}

const COMMANDS: [&str; 6] = ["get ", "list ", "stats", "help", "quit", "exit"];

impl rustyline::completion::Completer for Completion {
    type Candidate = String;

    fn complete(&self, line: &str, pos: usize, _: &rustyline::Context<'_>) -> rustyline::Result<(usize, Vec<String>)> {
        Ok(complete(&self.names, line.get(..pos).unwrap_or(line)))
    }
}

/// Completions of `typed` (the line up to the cursor): where the completed word starts, and the
/// candidates. A name is everything after the command, spaces included.
fn complete(names: &[String], typed: &str) -> (usize, Vec<String>) {
    for verb in ["get ", "list ", "ls "] {
        if let Some(partial) = typed.strip_prefix(verb) {
            let found = names.iter().filter(|n| n.starts_with(partial)).cloned().collect();
            return (verb.len(), found);
        }
    }
    let found = COMMANDS.iter().filter(|c| c.starts_with(typed)).map(|c| c.to_string()).collect();
    (0, found)
}

#[cfg(test)]
mod tests {
    use super::complete;

    #[test]
    fn completes_commands_then_names_with_spaces() {
        let names: Vec<String> = ["docs/a b.txt", "docs/notes.txt", "file1.txt"].map(String::from).to_vec();
        assert_eq!(complete(&names, "g"), (0, vec!["get ".to_string()]));
        assert_eq!(complete(&names, "get f"), (4, vec!["file1.txt".to_string()]));
        assert_eq!(complete(&names, "get docs/a"), (4, vec!["docs/a b.txt".to_string()]));
        assert_eq!(complete(&names, "get docs/").1.len(), 2);
        assert_eq!(complete(&names, "list d").1.len(), 2);
        assert!(complete(&names, "get zzz").1.is_empty());
    }
}
