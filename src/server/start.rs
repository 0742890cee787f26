//! Why a server could not start, and the check that keeps the cache folder and the TLS identity
//! out of what it serves.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::{auth, tls};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot open the served folder {}: {source}", path.display())]
    Root { path: PathBuf, source: io::Error },
    #[error("the PROXY protocol needs the addresses of the proxies to trust (--trusted-proxy CIDR)")]
    NoTrustedProxy,
    #[error("cannot make the uploads' staging folder {} beneath the served folder: {source}", crate::store::STAGING)]
    Staging { source: io::Error },
    #[error("cannot open the cache folder {}: {source}", path.display())]
    CacheDir { path: PathBuf, source: io::Error },
    #[error(
        "the cache folder {} is inside the served folder {}: its files would be served, and files of \
         the served folder that look like cache files deleted; choose a folder outside it",
        cache.display(), root.display()
    )]
    CacheInRoot { cache: PathBuf, root: PathBuf },
    #[error("cannot start the cache janitor thread: {source}")]
    Thread { source: io::Error },
    #[error("TLS identity: {0}")]
    Identity(#[from] tls::IdentityError),
    #[error("auth file: {0}")]
    AuthFile(#[from] auth::AuthFileError),
    #[error(
        "{} and there is no auth file, so every file would be served to anyone who connects: add a \
         token (ftserver token add NAME) and start with --auth-file, or pass --allow-anonymous if \
         that is intended",
        if *proxied { format!("behind a proxy (--proxy-protocol), clients reach {addr} from other machines,") }
        else { format!("{addr} can be reached from other machines") }
    )]
    Anonymous { addr: SocketAddr, proxied: bool },
    #[error(
        "the TLS identity {} is inside the served folder {}: its private key would be served; \
         choose a file outside it",
        identity.display(), root.display()
    )]
    IdentityInRoot { identity: PathBuf, root: PathBuf },
}

/// Whether `path` (which may not exist yet) is `folder` or lies beneath it, once both are resolved:
/// the nearest existing ancestor of `path` is resolved (symlinks, `..`), and the components that do
/// not exist yet are applied to it in order (`..` going up).
pub(super) fn inside(path: &Path, folder: &Path) -> bool {
    use std::path::Component;
    let Ok(folder) = std::fs::canonicalize(folder) else { return false };
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    let mut resolved = loop {
        if let Ok(resolved) = std::fs::canonicalize(&existing) {
            break resolved;
        }
        match existing.components().next_back() {
            Some(last @ (Component::Normal(_) | Component::ParentDir | Component::CurDir)) => {
                rest.push(last.as_os_str().to_owned());
                existing.pop();
                if existing.as_os_str().is_empty() {
                    existing.push(".");
                }
            }
            _ => return false,
        }
    };
    for part in rest.iter().rev() {
        match part.to_str() {
            Some("..") => {
                resolved.pop();
            }
            Some(".") => {}
            _ => resolved.push(part),
        }
    }
    resolved.starts_with(&folder)
}
