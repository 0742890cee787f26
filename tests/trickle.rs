//! Peers that trickle: a TLS ClientHello a byte at a time, a request inside TLS records split
//! into single bytes, a PROXY header from a trusted proxy, and a server trickling its own TLS
//! bytes to a client. Each must be cut off by its deadline (the request timeout, the client's
//! --timeout), not kept alive by every byte that arrives. The figure checked is how many bytes
//! the trickler got to send before the other side gave up: a byte every 300 ms against a
//! deadline of about a second.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use ft::server::Config;

use crate::util::{Dirs, TestServer, WAIT};

/// Between two bytes of a trickle (and how long each check for the peer having closed waits).
const PACE: Duration = Duration::from_millis(300);
/// Most bytes a trickle may get out before a deadline of about a second cuts it off (4 would do;
/// the rest is for a slow machine).
const CUT_WITHIN: usize = 10;

/// Sends `bytes` one at a time, `PACE` apart, until the peer closes; how many went out.
fn trickle(stream: &mut TcpStream, bytes: &[u8]) -> usize {
    for (sent, byte) in bytes.iter().enumerate() {
        if stream.write_all(std::slice::from_ref(byte)).is_err() || closed_within_pace(stream) {
            return sent + 1;
        }
    }
    bytes.len()
}

/// Waits up to `PACE` for the peer to close, dropping what it says meanwhile (a last word).
fn closed_within_pace(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(PACE)).unwrap();
    let until = std::time::Instant::now() + PACE;
    let mut buf = [0u8; 4096];
    while std::time::Instant::now() < until {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
    false
}

/// A TLS client config that accepts any server certificate (these tests look at timing, not trust).
fn any_server() -> Arc<rustls::ClientConfig> {
    #[derive(Debug)]
    struct Any(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for Any {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = ft::transport::tls_provider();
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Any(provider)))
        .with_no_client_auth();
    Arc::new(config)
}

fn server_with_a_short_request_timeout(dirs: &Dirs) -> TestServer {
    dirs.put("a.txt", b"a");
    TestServer::start(Config { request_timeout: Duration::from_secs(1), ..dirs.config() })
}

#[test]
fn a_client_hello_trickled_a_byte_at_a_time_is_cut_off_at_the_request_timeout() {
    let dirs = Dirs::new();
    let server = server_with_a_short_request_timeout(&dirs);
    let mut hello = Vec::new();
    let mut conn = rustls::ClientConnection::new(any_server(), "ft".try_into().unwrap()).unwrap();
    conn.write_tls(&mut hello).unwrap();
    assert!(hello.len() > 100, "a whole ClientHello: {} bytes", hello.len());
    let mut stream = TcpStream::connect(server.addr).unwrap();
    let sent = trickle(&mut stream, &hello);
    assert!(sent <= CUT_WITHIN, "{sent} bytes of the ClientHello went out before the server gave up");
    server.wait_connections(0);
}

#[test]
fn a_request_trickled_inside_tls_records_is_cut_off_at_the_request_timeout() {
    let dirs = Dirs::new();
    let server = server_with_a_short_request_timeout(&dirs);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut conn = rustls::ClientConnection::new(any_server(), "ft".try_into().unwrap()).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut stream).unwrap();
    }
    // One request, whole, is answered...
    conn.writer().write_all(b"stats\n").unwrap();
    while conn.wants_write() {
        conn.write_tls(&mut stream).unwrap();
    }
    let mut first = [0u8; 3];
    rustls::Stream::new(&mut conn, &mut stream).read_exact(&mut first).unwrap();
    assert_eq!(&first, b"OK ");
    // ... the next one's record trickles in a byte at a time.
    conn.writer().write_all(b"list\n").unwrap();
    let mut record = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut record).unwrap();
    }
    // What the server still has to say of the first request.
    assert!(!closed_within_pace(&mut stream));
    let sent = trickle(&mut stream, &record);
    assert!(sent <= CUT_WITHIN, "{sent} of {} record bytes went out before the server gave up", record.len());
}

#[test]
fn a_proxy_header_trickled_by_a_trusted_proxy_is_cut_off_at_the_request_timeout() {
    let dirs = Dirs::new();
    let server = TestServer::start(Config {
        proxy_protocol: true,
        trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
        allow_anonymous: true,
        request_timeout: Duration::from_secs(1),
        ..dirs.config()
    });
    let mut stream = TcpStream::connect(server.addr).unwrap();
    let header = b"PROXY TCP4 203.0.113.7 198.51.100.1 40000 9000\r\n";
    let sent = trickle(&mut stream, header);
    assert!(sent <= CUT_WITHIN, "{sent} bytes of the header went out before the server gave up");
}

/// A TLS server for one connection that trickles its own bytes, a byte every `PACE`: from its
/// first (`handshake`), or only those after the handshake. Returns its port, and a handle that
/// yields how many bytes it got to send before the client went away.
fn trickling_server(handshake: bool) -> (u16, std::thread::JoinHandle<usize>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().self_signed(&key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(ft::transport::tls_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
        if !handshake {
            while conn.is_handshaking() {
                if conn.complete_io(&mut stream).is_err() {
                    return 0;
                }
            }
            // The client's hello and first request; the reply trickles.
            let mut request = [0u8; 1];
            let _ = rustls::Stream::new(&mut conn, &mut stream).read(&mut request);
            conn.writer().write_all(b"OK 2 features=\n").unwrap();
        } else {
            let mut hello = [0u8; 4096];
            let n = stream.read(&mut hello).unwrap();
            conn.read_tls(&mut &hello[..n]).unwrap();
            conn.process_new_packets().unwrap();
        }
        let mut bytes = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut bytes).unwrap();
        }
        trickle(&mut stream, &bytes)
    });
    (port, handle)
}

#[test]
fn a_server_trickling_its_tls_bytes_cannot_keep_the_client_past_its_timeout() {
    for handshake in [true, false] {
        let (port, server) = trickling_server(handshake);
        let out = std::process::Command::new(crate::util::bin("ftclient"))
            .args(["--port", &port.to_string(), "--timeout", "1s", "--tls", "--accept-new", "list"])
            .env("FT_KNOWN_HOSTS", tempfile::tempdir().unwrap().path().join("known_hosts"))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "handshake {handshake}: {err}");
        assert!(err.contains("timed out"), "handshake {handshake}: {err}");
        let sent = server.join().unwrap();
        assert!(sent <= CUT_WITHIN, "handshake {handshake}: {sent} bytes went out before the client gave up");
    }
}
