//! Whether to speak TLS to a server, and whether to trust the one that answers, as OpenSSH decides
//! about host keys.
//!
//! A server is known by the fingerprint of its public key ([`Fingerprint`]). The client keeps
//! the servers it trusts in a known-hosts file, one `host:port fingerprint` per line. When a
//! server answers, its key is checked in this order: against the known-hosts line for the host
//! and port, where a different key is a loud failure of its own whatever else is said; against a
//! fingerprint pinned for this run (`--fingerprint`); for a host name, against the system's certificate authorities
//! (a CA-issued certificate needs no known-hosts line); else the server is unknown, and is
//! trusted only if the caller accepts new servers (`--accept-new`) or a person says yes. Whatever
//! decides, the handshake's signature is still checked against the key, so only a server holding
//! the private key passes. A newly trusted server is written to the known-hosts file only once
//! the handshake has completed.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::fingerprint::Fingerprint;

/// When to speak TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// TLS to every server that is not on this machine (a loopback address); plain text to one
    /// that is.
    #[default]
    Auto,
    /// TLS always, loopback included (`--tls`).
    Always,
    /// Never (`--plaintext`): the explicit opt-out.
    Never,
}

/// Asked, when a server is unknown, whether to trust it: the `host:port` and the fingerprint.
pub type Ask = Arc<dyn Fn(&str, &Fingerprint) -> bool + Send + Sync>;

/// How servers are trusted.
#[derive(Clone, Default)]
pub struct Trust {
    /// The known-hosts file; [`default_known_hosts`] if `None`.
    pub known_hosts: Option<PathBuf>,
    /// Trust, and record, a server not seen before (`--accept-new`).
    pub accept_new: bool,
    /// Trust only a server with this fingerprint, for this run (`--fingerprint`).
    pub pinned: Option<Fingerprint>,
    /// Asks a person about an unknown server; without it, an unknown server is refused.
    pub ask: Option<Ask>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust")
            .field("known_hosts", &self.known_hosts)
            .field("accept_new", &self.accept_new)
            .field("pinned", &self.pinned)
            .field("ask", &self.ask.is_some())
            .finish()
    }
}

impl Trust {
    pub fn known_hosts_path(&self) -> PathBuf {
        self.known_hosts.clone().unwrap_or_else(default_known_hosts)
    }
}

/// When and how to speak TLS.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    pub mode: TlsMode,
    pub trust: Trust,
}

/// The known-hosts file used when none is given: `$FT_KNOWN_HOSTS`, else `known_hosts` in ft's
/// configuration folder.
pub fn default_known_hosts() -> PathBuf {
    match std::env::var_os("FT_KNOWN_HOSTS").filter(|v| !v.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => crate::config_folder().join("known_hosts"),
    }
}

/// How a server is known in the known-hosts file, whatever way its address was written: an IP
/// address in its canonical form (`[::1]:9000` for `::1`, `[0::1]`, `0:0:0:0:0:0:0:1`; an
/// IPv4-mapped IPv6 address as the IPv4 one), a host name in lower case without a trailing dot,
/// then `:port`. `None` if `host_port` has no port.
pub fn host_key(host_port: &str) -> Option<String> {
    let (host, port) = host_port.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    Some(match host.parse::<std::net::IpAddr>() {
        Ok(ip) => match ip.to_canonical() {
            std::net::IpAddr::V6(v6) => format!("[{v6}]:{port}"),
            v4 => format!("{v4}:{port}"),
        },
        Err(_) => format!("{}:{port}", host.trim_end_matches('.').to_ascii_lowercase()),
    })
}

/// The fingerprint recorded for `host_port` in a known-hosts file, and its line number; `None`
/// if the file or the line is missing. Lines are `host:port fingerprint`; blank lines and lines
/// starting with `#` are skipped, as are lines that do not parse. Both the line's host and the
/// one asked for are compared as [`host_key`] writes them.
pub fn lookup(path: &Path, host_port: &str) -> io::Result<Option<(Fingerprint, usize)>> {
    let wanted = host_key(host_port).unwrap_or_else(|| host_port.to_ascii_lowercase());
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        if let (Some(host), Some(fp)) = (fields.next(), fields.next())
            && host_key(host).unwrap_or_else(|| host.to_ascii_lowercase()) == wanted
            && let Some(fp) = Fingerprint::parse(fp)
        {
            return Ok(Some((fp, i + 1)));
        }
    }
    Ok(None)
}

/// Appends `host_port fingerprint` to a known-hosts file (the host as [`host_key`] writes it),
/// creating it (0600) and its folder (0700) if missing.
pub fn record(path: &Path, host_port: &str, fingerprint: &Fingerprint) -> io::Result<()> {
    let host_port = host_key(host_port).unwrap_or_else(|| host_port.to_ascii_lowercase());
    crate::files::private::append_private(path, format!("{host_port} {fingerprint}\n").as_bytes())
}

/// What checking a server's key decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Trusted: known, pinned, or vouched for by a certificate authority.
    Trusted,
    /// Trusted as a new server, to be recorded once the handshake completes.
    Record(Fingerprint),
    /// The known-hosts file has another key for this server.
    Changed { expected: Fingerprint, actual: Fingerprint, line: usize },
    /// Not the fingerprint pinned for this run.
    NotPinned { expected: Fingerprint, actual: Fingerprint },
    /// Unknown, and not accepted (no `--accept-new`, or a person said no).
    Unknown(Fingerprint),
}

/// The certificate verifier that applies [`Trust`] to one connection.
pub(crate) struct Verifier {
    host_port: String,
    trust: Trust,
    known: Option<(Fingerprint, usize)>,
    provider: Arc<CryptoProvider>,
    decision: Mutex<Option<Decision>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("host_port", &self.host_port).finish()
    }
}

impl Verifier {
    pub(crate) fn new(host_port: &str, trust: &Trust, provider: Arc<CryptoProvider>) -> io::Result<Verifier> {
        let known = lookup(&trust.known_hosts_path(), host_port)?;
        Ok(Verifier {
            host_port: host_port.to_string(),
            trust: trust.clone(),
            known,
            provider,
            decision: Mutex::new(None),
        })
    }

    /// What the last check decided, if one was made.
    pub(crate) fn decision(&self) -> Option<Decision> {
        self.decision.lock().clone()
    }

    fn decide(
        &self,
        actual: Fingerprint,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Decision {
        // A key other than the one on record always fails, whatever else is said.
        if let Some((expected, line)) = self.known
            && expected != actual
        {
            return Decision::Changed { expected, actual, line };
        }
        if let Some(expected) = self.trust.pinned {
            return if expected == actual { Decision::Trusted } else { Decision::NotPinned { expected, actual } };
        }
        if self.known.is_some() {
            return Decision::Trusted;
        }
        if matches!(server_name, ServerName::DnsName(_))
            && self.vouched_for(end_entity, intermediates, server_name, now)
        {
            return Decision::Trusted;
        }
        if self.trust.accept_new || self.trust.ask.as_ref().is_some_and(|ask| ask(&self.host_port, &actual)) {
            return Decision::Record(actual);
        }
        Decision::Unknown(actual)
    }

    /// Whether a certificate authority the system trusts vouches for this certificate and name.
    fn vouched_for(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> bool {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        if roots.is_empty() {
            return false;
        }
        let Ok(webpki) =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone()).build()
        else {
            return false;
        };
        webpki.verify_server_cert(end_entity, intermediates, server_name, &[], now).is_ok()
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let actual = Fingerprint::of_cert(end_entity)
            .ok_or(rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
        let decision = self.decide(actual, end_entity, intermediates, server_name, now);
        let trusted = matches!(decision, Decision::Trusted | Decision::Record(_));
        *self.decision.lock() = Some(decision);
        if trusted {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hosts_are_recorded_and_found_by_host_and_port() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ft/known_hosts");
        let (a, b) = (Fingerprint::of_spki(b"a"), Fingerprint::of_spki(b"b"));
        assert_eq!(lookup(&path, "h:1").unwrap(), None, "no file yet");
        record(&path, "h:1", &a).unwrap();
        record(&path, "[::1]:9000", &b).unwrap();
        assert_eq!(lookup(&path, "h:1").unwrap(), Some((a, 1)));
        assert_eq!(lookup(&path, "H:1").unwrap(), Some((a, 1)), "host names are not case-sensitive");
        assert_eq!(lookup(&path, "[::1]:9000").unwrap(), Some((b, 2)));
        assert_eq!(lookup(&path, "h:2").unwrap(), None, "another port is another server");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let mut text = fs::read_to_string(&path).unwrap();
        text.insert_str(0, "# a comment\n\ngarbage\n");
        fs::write(&path, text).unwrap();
        assert_eq!(lookup(&path, "[::1]:9000").unwrap(), Some((b, 5)));
    }

    #[test]
    fn a_server_is_known_however_its_address_is_written() {
        for same in ["[::1]:9000", "::1:9000", "[0::1]:9000", "[0:0:0:0:0:0:0:1]:9000", "0:0:0:0:0:0:0:1:9000"] {
            assert_eq!(host_key(same).as_deref(), Some("[::1]:9000"), "{same}");
        }
        assert_eq!(host_key("[::ffff:10.0.0.1]:1").as_deref(), Some("10.0.0.1:1"));
        assert_eq!(host_key("Server.Example.:22").as_deref(), Some("server.example:22"));
        assert_eq!(host_key("127.000.0.1:5"), Some("127.000.0.1:5".into()), "not an address: a name, as written");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        let fp = Fingerprint::of_spki(b"k");
        record(&path, "::1:9000", &fp).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("[::1]:9000 {fp}\n"));
        for same in ["[::1]:9000", "[0::1]:9000", "0:0:0:0:0:0:0:1:9000"] {
            assert_eq!(lookup(&path, same).unwrap(), Some((fp, 1)), "{same}");
        }
        // A line written before, as the address was typed, is found the same way.
        fs::write(&path, format!("0:0::1:9000 {fp}\n")).unwrap();
        assert_eq!(lookup(&path, "[::1]:9000").unwrap(), Some((fp, 1)));
    }
}
