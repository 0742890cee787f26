//! Reaching the server as the flags say: TLS or plain text, which server keys to trust (a person at
//! a terminal is asked about an unknown one, as ssh asks), and the token to present.

use std::io::{self, IsTerminal};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use ft::client::trust::{TlsMode, TlsOptions, Trust};
use ft::fingerprint::Fingerprint;
use ft::wire::escape;

use crate::cli::Args;
use crate::exit::Usage;

/// How to speak TLS, from the flags: a person at a terminal is asked about an unknown server.
pub(crate) fn tls_options(args: &Args) -> TlsOptions {
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
pub(crate) fn read_token(file: Option<&Path>) -> anyhow::Result<Option<ft::wire::Secret>> {
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
