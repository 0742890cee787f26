//! What a person watching sees on stderr: one progress bar for the whole command, and notes that
//! never tear it.

use std::io::{self, IsTerminal};
use std::sync::Arc;

use ft::client::Progress;
use ft::name::Name;
use ft::wire::escape;

/// The progress bar on stderr: one for the whole command, bytes of this run only (bytes kept from
/// a resumed `.part` are not counted), its total growing as each file's size becomes known.
pub(crate) struct Bar {
    bar: indicatif::ProgressBar,
    files: std::sync::atomic::AtomicU64,
}

impl Bar {
    /// A bar if stderr is a terminal and not `--quiet`.
    pub(crate) fn new(quiet: bool) -> Option<Arc<Bar>> {
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

    /// Clears the bar, if any, once the command is done.
    pub(crate) fn finish(bar: Option<&Arc<Bar>>) {
        if let Some(bar) = bar {
            bar.bar.finish_and_clear();
        }
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
pub(crate) fn say(bar: Option<&Arc<Bar>>, message: &str) {
    let message = escape(message);
    match bar {
        Some(bar) => bar.bar.suspend(|| eprintln!("{message}")),
        None => eprintln!("{message}"),
    }
}
