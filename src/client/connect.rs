//! Reaching a server: connecting to the first address that answers, and TLS with the trust the
//! caller asked for (known hosts, a pinned fingerprint, a certificate authority).

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

use super::conn::Client;
use super::result::{ClientError, KeyMismatch};
use super::trust::{self, Decision, TlsMode, TlsOptions, Trust, Verifier};
use crate::transport::Transport;

/// The server `ftclient` talks to when given no `--host`.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// How long `ftclient` waits to connect, or for the server, when given no `--timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

impl Client {
    /// Connects to `addr` (`host:port`) with the default [`TlsOptions`]: TLS to a server that is
    /// not on this machine, trusted through the default known-hosts file.
    pub fn connect(addr: &str, timeout: Duration) -> Result<Client, ClientError> {
        Client::connect_with(addr, timeout, &TlsOptions::default())
    }

    /// Connects to `addr` (`host:port`), trying each resolved address within `timeout`, and speaks
    /// TLS as `tls` says (the handshake too must finish within `timeout`); reads and writes then
    /// time out after `timeout` without progress. A TLS failure never falls back to plain text.
    pub fn connect_with(addr: &str, timeout: Duration, tls: &TlsOptions) -> Result<Client, ClientError> {
        let fail = |source| ClientError::Connect { addr: addr.to_string(), source };
        let (stream, rtt) = connect_any(addr.to_socket_addrs().map_err(fail)?, timeout).map_err(fail)?;
        stream.set_nodelay(true).map_err(fail)?;
        stream.set_write_timeout(Some(timeout)).map_err(fail)?;
        let use_tls = match tls.mode {
            TlsMode::Always => true,
            TlsMode::Never => false,
            TlsMode::Auto => !stream.peer_addr().map_err(fail)?.ip().to_canonical().is_loopback(),
        };
        let mut transport =
            if use_tls { tls_handshake(addr, stream, timeout, &tls.trust)? } else { Transport::plain(stream) };
        // Each read gets data within the timeout, or fails: also when a server trickles its TLS
        // records a byte at a time (each byte would restart a socket's own timeout).
        transport.set_read_timeout(Some(timeout));
        transport.set_progress(Some(timeout));
        let mut client = Client::over(transport).map_err(fail)?;
        client.rtt = rtt;
        Ok(client)
    }
}

/// Sets TLS up over `stream` to the server `addr` names, as `trust` says, and records a newly
/// trusted server once the handshake (which proves it holds the key) has completed. What
/// [`Client::connect_with`] does for TLS; public for speaking the protocol by hand over it.
pub fn tls_handshake(
    addr: &str,
    stream: TcpStream,
    timeout: Duration,
    trust: &Trust,
) -> Result<Transport, ClientError> {
    // Known however the address was written (`::1`, `[0::1]`, a host name in capitals).
    let host_port = trust::host_key(addr).unwrap_or_else(|| addr.to_ascii_lowercase());
    let host = match host_port.rsplit_once(':') {
        Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
        None => host_port.as_str(),
    };
    let tls_failed = |e: io::Error| ClientError::Tls { addr: addr.to_string(), source: e };
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| tls_failed(io::Error::new(io::ErrorKind::InvalidInput, "not a host name or address")))?;
    let provider = crate::transport::tls_provider();
    let known_hosts = trust.known_hosts_path();
    let local = |source| ClientError::Local { path: known_hosts.clone(), source };
    let verifier = Arc::new(Verifier::new(&host_port, trust, provider.clone()).map_err(local)?);
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_failed(io::Error::other(e)))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let session = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| tls_failed(io::Error::other(e)))?;
    let mut transport = Transport::tls_client(stream, session);
    let handshake = transport.handshake(std::time::Instant::now() + timeout);
    match (handshake, verifier.decision()) {
        (Ok(()), Some(Decision::Record(fingerprint))) => {
            trust::record(&known_hosts, &host_port, &fingerprint).map_err(local)?;
            Ok(transport)
        }
        (Ok(()), _) => Ok(transport),
        (Err(_), Some(Decision::Changed { expected, actual, line })) => {
            Err(ClientError::HostKeyChanged(Box::new(KeyMismatch {
                host: host_port,
                expected,
                actual,
                known_hosts,
                line,
            })))
        }
        (Err(_), Some(Decision::NotPinned { expected, actual })) => {
            let known_hosts = PathBuf::new();
            Err(ClientError::NotPinned(Box::new(KeyMismatch {
                host: host_port,
                expected,
                actual,
                known_hosts,
                line: 0,
            })))
        }
        (Err(_), Some(Decision::Unknown(fingerprint))) => {
            Err(ClientError::UnknownHost { host: host_port, fingerprint: Box::new(fingerprint), known_hosts })
        }
        (Err(e), _) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
            Err(ClientError::Timeout)
        }
        (Err(e), _) if answered_in_plain_text(&e) => Err(tls_failed(io::Error::other(
            "the server answered in plain text, not TLS: it may be turning connections away (too busy, or too \
             many failed attempts from this address), or it does not speak TLS",
        ))),
        (Err(e), _) => Err(tls_failed(e)),
    }
}

/// Whether a handshake failed because what came back was not TLS at all (an `ERR` line, say).
fn answered_in_plain_text(e: &io::Error) -> bool {
    let tls = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    matches!(tls, Some(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)))
}

/// Connects to the first of `candidates` that accepts (a host name may resolve to an IPv6 address
/// nothing listens on before the IPv4 one that works), each tried for up to `timeout`; with the
/// time the connect that worked took (a round trip).
fn connect_any(
    candidates: impl IntoIterator<Item = SocketAddr>,
    timeout: Duration,
) -> io::Result<(TcpStream, Duration)> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address found");
    for candidate in candidates {
        let began = std::time::Instant::now();
        match TcpStream::connect_timeout(&candidate, timeout) {
            Ok(stream) => return Ok((stream, began.elapsed())),
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn connecting_tries_every_address_in_turn() {
        let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let open = TcpListener::bind("127.0.0.1:0").unwrap();
        let good = open.local_addr().unwrap();
        let (stream, _) = connect_any([closed, good], Duration::from_secs(5)).unwrap();
        assert_eq!(stream.peer_addr().unwrap(), good);
        let refused = connect_any([closed], Duration::from_secs(5)).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(connect_any([], Duration::from_secs(5)).unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
