//! Tokens: who may use the server, and for what.
//!
//! A token is `ft_<id>_<secret>`: an 8-hex-digit id, stored in clear so a failure can name the
//! token it was meant to be, and 256 random bits of secret (43 characters of unpadded base64url).
//! The auth file keeps, per token, a name, its rights, its id and the SHA-256 of its secret, never
//! the secret itself: one line `NAME RIGHTS ID SHA256-HEX` each, `#` comments allowed. (A plain
//! SHA-256 is enough: the secret is random and long, so there is nothing to guess from the hash.)
//! The file holds what grants access, so it is written with mode 0600 in one step and refused if
//! anyone else may read it. A running server rereads it when it changes, so a revoked token stops
//! working at once.
//!
//! Hashes are compared in constant time. Failed attempts are counted per peer address: after a
//! few, each further answer is delayed, doubling up to a few seconds; after more, the address is
//! cut off for a while ([`Limiter`]).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use parking_lot::Mutex;
use std::sync::Arc;

use crate::files::FileVersion;
use crate::files::private::{ReadError, read_private, write_private};
use crate::wire::Secret;

pub use crate::wire::Rights;

/// One line of the auth file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEntry {
    pub name: String,
    pub rights: Rights,
    pub id: String,
    hash: [u8; 32],
}

/// Why an auth file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "permissions {mode:04o} for {} are too open: it grants access to the server, so no one else may read it; \
         run chmod 600 on it",
        path.display()
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("refusing {}: {why} (as OpenSSH's StrictModes refuses such a key)", path.display())]
    Unsafe { path: PathBuf, why: String },
    #[error("{}, line {line}: expected NAME RIGHTS ID SHA256", path.display())]
    Malformed { path: PathBuf, line: usize },
    #[error("a token named {0:?} already exists")]
    Exists(String),
    #[error("no token named {0:?}")]
    NoSuchToken(String),
    #[error("a token name is 1 to 64 of a-z, A-Z, 0-9, '.', '_', '-', '@'")]
    BadName,
}

/// Why an `auth` failed (said to the peer; never the secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("that is not an ft token")]
    Malformed,
    #[error("unknown token")]
    Unknown,
    #[error("wrong secret for token {0:?}")]
    Wrong(String),
    #[error("too many failed attempts from your address; try again later")]
    CutOff,
}

/// The tokens a server accepts, from its auth file, reread when the file changes.
#[derive(Debug)]
pub struct AuthFile {
    path: PathBuf,
    state: Mutex<(Option<FileVersion>, Arc<Vec<TokenEntry>>)>,
}

impl AuthFile {
    /// Loads `path`; it must exist, be private, and parse.
    pub fn open(path: &Path) -> Result<AuthFile, AuthFileError> {
        let (stamp, entries) = read_file(path)?;
        Ok(AuthFile { path: path.to_path_buf(), state: Mutex::new((Some(stamp), Arc::new(entries))) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many tokens the file holds now.
    pub fn len(&self) -> usize {
        self.current().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries as the file has them now: reread if it changed. A file that became unreadable
    /// or malformed grants nothing until fixed (and the error is logged).
    /// It is asked on every request of a connection with a token, so the lock is held only to
    /// compare and swap, never across the file's `stat`, read or checks.
    fn current(&self) -> Arc<Vec<TokenEntry>> {
        let now = fs::metadata(&self.path).ok().map(|m| FileVersion::of_metadata(&m));
        {
            let state = self.state.lock();
            if now == state.0 {
                return state.1.clone();
            }
        }
        let read = match read_file(&self.path) {
            Ok((stamp, entries)) => (Some(stamp), Arc::new(entries)),
            Err(e) => {
                tracing::warn!("auth file unusable, no token accepted until it is fixed: {e}");
                (now, Arc::new(Vec::new()))
            }
        };
        let entries = read.1.clone();
        *self.state.lock() = read;
        entries
    }

    /// The entry a presented token matches, compared in constant time.
    pub fn check(&self, presented: &Secret) -> Result<TokenEntry, Refused> {
        let (id, secret) = split_token(presented.expose()).ok_or(Refused::Malformed)?;
        let entries = self.current();
        let entry = entries.iter().find(|e| e.id == id).ok_or(Refused::Unknown)?;
        if constant_time_eq(&hash(secret), &entry.hash) {
            Ok(entry.clone())
        } else {
            Err(Refused::Wrong(entry.name.clone()))
        }
    }

    /// The rights of a token checked earlier, as the auth file has them now (reread if it
    /// changed); `None` once it is revoked (or replaced by another secret, or the file is unusable).
    pub fn still_valid(&self, token: &TokenEntry) -> Option<Rights> {
        let entries = self.current();
        entries.iter().find(|e| e.id == token.id && e.hash == token.hash).map(|e| e.rights)
    }
}

fn split_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("ft_")?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = id.len() == 8 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let secret_ok = secret.len() == 43 && URL_SAFE_NO_PAD.decode(secret).is_ok_and(|b| b.len() == 32);
    (id_ok && secret_ok).then_some((id, secret))
}

fn hash(secret: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Whether two hashes are equal, in a time that does not depend on where they first differ
/// (`subtle`'s constant-time comparison, which the compiler cannot turn into an early exit).
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.ct_eq(b))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Reads and parses an auth file, refusing one that others may read or write.
fn read_file(path: &Path) -> Result<(FileVersion, Vec<TokenEntry>), AuthFileError> {
    let (meta, bytes) = read_private(path, true, 16 << 20).map_err(|e| match e {
        ReadError::Io(source) => AuthFileError::Read { path: path.to_path_buf(), source },
        ReadError::TooOpen(mode) => AuthFileError::TooOpen { path: path.to_path_buf(), mode },
        ReadError::Unsafe(why) => AuthFileError::Unsafe { path: path.to_path_buf(), why },
    })?;
    let text = String::from_utf8(bytes).map_err(|e| AuthFileError::Read {
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidData, e),
    })?;
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let malformed = || AuthFileError::Malformed { path: path.to_path_buf(), line: i + 1 };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, rights, id, sha] = fields[..] else { return Err(malformed()) };
        let rights = Rights::parse_list(rights).ok_or_else(malformed)?;
        let hash = unhex(sha).ok_or_else(malformed)?;
        entries.push(TokenEntry { name: name.to_string(), rights, id: id.to_string(), hash });
    }
    Ok((FileVersion::of_metadata(&meta), entries))
}

/// The tokens in an auth file (none if it does not exist), for `ftserver token list`.
pub fn list(path: &Path) -> Result<Vec<TokenEntry>, AuthFileError> {
    match read_file(path) {
        Ok((_, entries)) => Ok(entries),
        Err(AuthFileError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Adds a token named `name` to the auth file (created if missing) and returns it: the only time
/// the secret exists outside the client that will hold it.
pub fn add(path: &Path, name: &str, rights: Rights) -> Result<Secret, AuthFileError> {
    let valid = |c: char| c.is_ascii_alphanumeric() || ".-_@".contains(c);
    if name.is_empty() || name.len() > 64 || !name.chars().all(valid) {
        return Err(AuthFileError::BadName);
    }
    let mut entries = list(path)?;
    if entries.iter().any(|e| e.name == name) {
        return Err(AuthFileError::Exists(name.to_string()));
    }
    let rng = ring::rand::SystemRandom::new();
    let random = |n: usize| -> Result<Vec<u8>, AuthFileError> {
        let mut bytes = vec![0u8; n];
        ring::rand::SecureRandom::fill(&rng, &mut bytes).map_err(|_| AuthFileError::Write {
            path: path.to_path_buf(),
            source: io::Error::other("no randomness"),
        })?;
        Ok(bytes)
    };
    let id = loop {
        let id = hex(&random(4)?);
        if !entries.iter().any(|e| e.id == id) {
            break id;
        }
    };
    let secret = URL_SAFE_NO_PAD.encode(random(32)?);
    entries.push(TokenEntry { name: name.to_string(), rights, id: id.clone(), hash: hash(&secret) });
    write_file(path, &entries)?;
    Ok(Secret::new(format!("ft_{id}_{secret}")))
}

/// Removes the token named `name` from the auth file.
pub fn revoke(path: &Path, name: &str) -> Result<(), AuthFileError> {
    let mut entries = list(path)?;
    let before = entries.len();
    entries.retain(|e| e.name != name);
    if entries.len() == before {
        return Err(AuthFileError::NoSuchToken(name.to_string()));
    }
    write_file(path, &entries)
}

/// Writes the auth file in one step, mode 0600 (a temporary file beside it, renamed over it).
fn write_file(path: &Path, entries: &[TokenEntry]) -> Result<(), AuthFileError> {
    let mut text = String::from("# ft tokens: NAME RIGHTS ID SHA256-OF-SECRET (written by `ftserver token`)\n");
    for e in entries {
        text.push_str(&format!("{} {} {} {}\n", e.name, e.rights, e.id, hex(&e.hash)));
    }
    write_private(path, text.as_bytes(), true)
        .map_err(|source| AuthFileError::Write { path: path.to_path_buf(), source })
}

/// The auth file used when `--auth-file` is not given: `server_tokens` in ft's configuration
/// folder. The server uses it if it exists.
pub fn default_auth_path() -> PathBuf {
    crate::config_folder().join("server_tokens")
}

/// Failed attempts before answers start to slow down.
pub const SLOW_AFTER: u32 = 3;
/// Failed attempts after which an address is cut off.
pub const CUT_AFTER: u32 = 10;
/// How long failures are remembered, and how long a cut-off address stays cut off.
pub const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Longest delay added to one failed attempt.
const MAX_DELAY: Duration = Duration::from_secs(5);

/// Most addresses whose failures are remembered at once. A flood from more addresses than this
/// forgets the oldest first: memory stays bounded, and each failure costs the same whatever the
/// flood (an address forgotten early only gets its few slowed attempts again; a token has 256
/// random bits, so the slowing is against noise, not against guessing).
pub const MAX_ADDRESSES: usize = 65_536;

/// Failed attempts per peer address: bounded memory, constant time per failure and per lookup.
#[derive(Debug, Default)]
pub struct Limiter {
    table: Mutex<Failures>,
}

#[derive(Debug, Default)]
struct Failures {
    /// Per address: failures counted, and the last one's time.
    by_addr: HashMap<IpAddr, (u32, Instant)>,
    /// Every failure's address and time, oldest first: what to forget next. An address that
    /// failed again has a later entry too; only the entry matching its last failure forgets it.
    order: std::collections::VecDeque<(IpAddr, Instant)>,
    /// Entries looked at, for tests to see the work stay constant per failure.
    work: u64,
}

impl Failures {
    /// Forgets failures older than [`FORGET_AFTER`], and the oldest ones past the bound.
    fn forget(&mut self, now: Instant) {
        while let Some(&(addr, at)) = self.order.front() {
            let full = self.order.len() > 2 * MAX_ADDRESSES || self.by_addr.len() > MAX_ADDRESSES;
            if !full && now.duration_since(at) < FORGET_AFTER {
                break;
            }
            self.work += 1;
            self.order.pop_front();
            if self.by_addr.get(&addr).is_some_and(|&(_, last)| last == at) {
                self.by_addr.remove(&addr);
            }
        }
    }
}

impl Limiter {
    /// Whether `addr` is cut off now.
    pub fn is_cut_off(&self, addr: IpAddr, now: Instant) -> bool {
        matches!(self.table.lock().by_addr.get(&addr), Some((n, last)) if *n >= CUT_AFTER && now.duration_since(*last) < FORGET_AFTER)
    }

    /// Counts a failure from `addr`; returns how long to wait before answering it, and whether
    /// the address is now cut off. The delay doubles from `base` after [`SLOW_AFTER`] failures.
    pub fn failed(&self, addr: IpAddr, now: Instant, base: Duration) -> (Duration, bool) {
        let mut table = self.table.lock();
        table.work += 1;
        let entry = table.by_addr.entry(addr).or_insert((0, now));
        if now.duration_since(entry.1) >= FORGET_AFTER {
            entry.0 = 0;
        }
        entry.0 += 1;
        entry.1 = now;
        let n = entry.0;
        table.order.push_back((addr, now));
        table.forget(now);
        let delay = match n.checked_sub(SLOW_AFTER + 1) {
            None => Duration::ZERO,
            Some(k) => base.saturating_mul(1 << k.min(16)).min(MAX_DELAY),
        };
        (delay, n >= CUT_AFTER)
    }

    /// Forgets the failures of an address that has just authenticated.
    pub fn succeeded(&self, addr: IpAddr) {
        self.table.lock().by_addr.remove(&addr);
    }

    /// How many addresses' failures are remembered, and the work done so far (for tests).
    pub fn load(&self) -> (usize, usize, u64) {
        let table = self.table.lock();
        (table.by_addr.len(), table.order.len(), table.work)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn tokens_are_added_checked_listed_and_revoked_and_only_hashes_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ft/tokens");
        let alice = add(&path, "alice", Rights::READ).unwrap();
        let bob = add(&path, "bob", Rights { read: true, write: true }).unwrap();
        assert!(alice.expose().starts_with("ft_") && alice.expose().len() == 3 + 8 + 1 + 43);
        assert_eq!(format!("{alice} {alice:?}"), "<secret> <secret>");
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&alice.expose()[12..]), "the secret is not stored");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(matches!(add(&path, "alice", Rights::READ), Err(AuthFileError::Exists(_))));
        assert!(matches!(add(&path, "a b", Rights::READ), Err(AuthFileError::BadName)));

        let file = AuthFile::open(&path).unwrap();
        assert_eq!(file.check(&alice).unwrap().name, "alice");
        let entry = file.check(&bob).unwrap();
        assert_eq!((entry.name.as_str(), entry.rights.write), ("bob", true));
        // The right id with another secret names the token; anything else is unknown or malformed.
        let wrong = Secret::new(format!("{}{}", &alice.expose()[..12], "A".repeat(43)));
        assert_eq!(file.check(&wrong), Err(Refused::Wrong("alice".into())));
        let unknown = Secret::new(format!("ft_00000000_{}", "A".repeat(43)));
        assert_eq!(file.check(&unknown), Err(Refused::Unknown));
        assert_eq!(file.check(&Secret::new("hunter2")), Err(Refused::Malformed));

        // Revoked while the server runs: refused at once.
        revoke(&path, "alice").unwrap();
        assert_eq!(file.check(&alice), Err(Refused::Unknown));
        assert_eq!(file.check(&bob).unwrap().name, "bob");
        assert!(matches!(revoke(&path, "alice"), Err(AuthFileError::NoSuchToken(_))));
        assert_eq!(list(&path).unwrap().len(), 1);

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(AuthFile::open(&path), Err(AuthFileError::TooOpen { .. })));
        assert_eq!(file.check(&bob), Err(Refused::Unknown), "an unprotected file grants nothing");
    }

    #[test]
    fn failures_slow_down_then_cut_off_an_address() {
        let limiter = Limiter::default();
        let (addr, other) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let now = Instant::now();
        let base = Duration::from_millis(100);
        let mut delays = Vec::new();
        for _ in 0..CUT_AFTER {
            delays.push(limiter.failed(addr, now, base));
        }
        assert_eq!(delays[..3], [(Duration::ZERO, false); 3]);
        assert_eq!(delays[3].0, base);
        assert_eq!(delays[4].0, base * 2);
        assert_eq!(delays[8], (Duration::from_millis(3200), false));
        assert_eq!(delays[9], (MAX_DELAY, true), "capped");
        assert!(limiter.is_cut_off(addr, now) && !limiter.is_cut_off(other, now));
        assert!(!limiter.is_cut_off(addr, now + FORGET_AFTER), "forgotten after a while");
        limiter.succeeded(addr);
        assert!(!limiter.is_cut_off(addr, now));
    }

    #[test]
    fn a_flood_from_a_million_addresses_takes_bounded_memory_and_constant_work() {
        let limiter = Limiter::default();
        let now = Instant::now();
        let flood = 1_000_000u32;
        for i in 0..flood {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from(0x7f00_0000 | i));
            limiter.failed(addr, now, Duration::ZERO);
            if i % 100_000 == 0 {
                let (addrs, order, _) = limiter.load();
                assert!(addrs <= MAX_ADDRESSES && order <= 2 * MAX_ADDRESSES + 1, "{addrs} {order}");
            }
        }
        let (addrs, order, work) = limiter.load();
        assert!(addrs <= MAX_ADDRESSES && order <= 2 * MAX_ADDRESSES + 1, "{addrs} {order}");
        assert!(work <= 2 * u64::from(flood), "{work} entries looked at for {flood} failures");
        // An address failing over and over is still cut off in the middle of it all.
        let loud: IpAddr = "10.9.9.9".parse().unwrap();
        for _ in 0..CUT_AFTER {
            limiter.failed(loud, now, Duration::ZERO);
        }
        assert!(limiter.is_cut_off(loud, now));
    }
}
