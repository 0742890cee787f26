//! Signals: Ctrl-C or SIGTERM ends ftclient at once, but in the shell Ctrl-C stops the command in
//! flight instead.

/// The shell's command in flight, if any: Ctrl-C cuts its connection instead of ending ftclient.
pub(crate) static BUSY: parking_lot::Mutex<Option<ft::client::Interrupter>> = parking_lot::Mutex::new(None);

/// Ctrl-C (or SIGTERM) ends the client at once with 128 + the signal (130 for Ctrl-C). Files being
/// downloaded into a folder stay as `.part`, which the next `get` continues, and the message says so
/// only when there can be any (`saves_parts`: not for `-o -`, `list` or `stats`).
pub(crate) fn exit_on_interrupt(saves_parts: bool) -> std::io::Result<()> {
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
