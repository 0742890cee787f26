//! What a person watching sees on stderr: one progress bar for the whole command, and notes that
//! never tear it.

use std::io::{self, IsTerminal};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ft::client::Progress;
use ft::name::Name;
use ft::wire::escape;

/// The progress bar on stderr: one for the whole command, bytes of this run only (bytes kept from
/// a resumed `.part` are not counted), its total growing as each file's size becomes known, and
/// beside them the bytes that actually crossed the wire (after delta and compression).
pub(crate) struct Bar {
    bar: indicatif::ProgressBar,
    files: AtomicU64,
    wire: Arc<AtomicU64>,
}

impl Bar {
    /// A bar if stderr is a terminal and not `--quiet`.
    pub(crate) fn new(quiet: bool) -> Option<Arc<Bar>> {
        if quiet || !io::stderr().is_terminal() {
            return None;
        }
        let bar = indicatif::ProgressBar::with_draw_target(Some(0), indicatif::ProgressDrawTarget::stderr());
        let wire = Arc::new(AtomicU64::new(0));
        let moved = wire.clone();
        let style = indicatif::ProgressStyle::with_template(
            "{msg:30!} [{bar:25}] {bytes}/{total_bytes} ({moved} moved) {binary_bytes_per_sec} ETA {eta}",
        )
        .map(|s| {
            s.progress_chars("=> ").with_key(
                "moved",
                move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{}", ft::human::size(moved.load(Ordering::Relaxed)));
                },
            )
        });
        if let Ok(style) = style {
            bar.set_style(style);
        }
        Some(Arc::new(Bar { bar, files: Default::default(), wire }))
    }

    /// Clears the bar, if any, once the command is done.
    pub(crate) fn finish(bar: Option<&Arc<Bar>>) {
        if let Some(bar) = bar {
            bar.bar.finish_and_clear();
        }
    }
}

impl Progress for Bar {
    fn begin(&self, name: &Name, len: u64) {
        let n = self.files.fetch_add(1, Ordering::Relaxed) + 1;
        self.bar.inc_length(len);
        self.bar.set_message(format!("[{n}] {name}"));
    }
    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }
    fn wire(&self) -> Option<Arc<AtomicU64>> {
        Some(self.wire.clone())
    }
}

/// Prints a note or error on stderr without tearing the progress bar.
/// The message is escaped whole: it may carry a server's text or a name, and nothing in it may act
/// on the terminal.
pub(crate) fn say(bar: Option<&Arc<Bar>>, message: &str) {
    let message = escape(message);
    match bar {
        Some(bar) => bar.bar.suspend(|| eprintln!("{message}")),
        None => eprintln!("{message}"),
    }
}

/// How much a command says on stderr: `--quiet` (errors only), the default (notes and summaries),
/// or `--verbose` (a line per file moved, too).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Voice {
    pub(crate) quiet: bool,
    pub(crate) verbose: bool,
}

impl Voice {
    /// With `--verbose`, says what one file moved: its size and the bytes that crossed the wire,
    /// and what a resumed `.part`, the older copy (delta) and compression spared.
    pub(crate) fn moved(self, bar: Option<&Arc<Bar>>, what: &str, name: &Name, moved: Moved) {
        if self.verbose {
            say(bar, &format!("{what} {name}: {}", moved.describe()));
        }
    }
}

/// A file's bytes, and what became of them on the wire.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Moved {
    pub(crate) size: u64,
    pub(crate) resumed_from: u64,
    pub(crate) reused: u64,
    pub(crate) compression_saved: u64,
}

impl Moved {
    pub(crate) fn downloaded(done: &ft::client::Downloaded) -> Moved {
        let ft::client::Downloaded { size, resumed_from, reused, compression_saved, .. } = *done;
        Moved { size, resumed_from, reused, compression_saved }
    }

    pub(crate) fn uploaded(done: &ft::client::Uploaded) -> Moved {
        let ft::client::Uploaded { size, resumed_from, reused, compression_saved, .. } = *done;
        Moved { size, resumed_from, reused, compression_saved }
    }

    /// The file's bytes that crossed the wire.
    pub(crate) fn wire(&self) -> u64 {
        self.size.saturating_sub(self.resumed_from + self.reused + self.compression_saved)
    }

    /// `64 MiB, moved 1.1 MiB (62.9 MiB from the older copy)`, as `-v` says it.
    pub(crate) fn describe(&self) -> String {
        let size = ft::human::size;
        let spared = self.spared();
        let spared = if spared.is_empty() { String::new() } else { format!(" ({spared})") };
        format!("{}, moved {}{spared}", size(self.size), size(self.wire()))
    }

    /// What did not cross the wire, and why (empty: nothing was spared).
    pub(crate) fn spared(&self) -> String {
        let size = ft::human::size;
        let mut spared = Vec::new();
        if self.resumed_from > 0 {
            spared.push(format!("{} kept from the .part", size(self.resumed_from)));
        }
        if self.reused > 0 {
            spared.push(format!("{} from the older copy", size(self.reused)));
        }
        if self.compression_saved > 0 {
            spared.push(format!("{} spared by compression", size(self.compression_saved)));
        }
        spared.join(", ")
    }

    /// A summary's account of the bytes: `3 MiB moved`, and what was spared, if anything.
    pub(crate) fn summed(moved: u64, reused: u64, compression_saved: u64) -> String {
        let spared = Moved { reused, compression_saved, ..Moved::default() }.spared();
        let moved = ft::human::size(moved);
        if spared.is_empty() { format!("{moved} moved") } else { format!("{moved} moved; {spared}") }
    }
}
