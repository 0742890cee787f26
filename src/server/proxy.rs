//! The PROXY protocol (versions 1 and 2, as HAProxy sends them): a load balancer in front of the
//! server says, ahead of the client's first byte, whom the connection is really from.
//!
//! Only peers in the trusted ranges (`--trusted-proxy`) may send the header, and from them it is
//! required: anyone else could claim any address. The header is parsed by the `ppp` crate and
//! read from the socket exactly, never a byte past it, so whatever the client sent right behind
//! it (a TLS handshake, a request) is still there for the connection to read.

use std::fmt;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use ppp::PartialResult;

/// The longest header taken: a version 1 header is at most 107 bytes; version 2 headers carry
/// addresses and a few TLVs (HAProxy's are well under this).
pub(crate) const MAX_HEADER: usize = 1024;

/// The longest version 1 header, line end included.
const V1_MAX: usize = 107;

/// The 12 bytes every version 2 header starts with.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// A range of addresses, `10.0.0.0/8` or `fd00::/8` (a lone address is the range of itself; an
/// IPv4 address mapped into IPv6 is taken as IPv4), matched by the `ipnet` crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(IpNet);

impl Cidr {
    /// Whether `ip` is in the range (an IPv4 address mapped into IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let bad = || format!("{s:?}: expected an address or a range such as 10.0.0.0/8 or fd00::/8");
        let (addr, bits) = match s.split_once('/') {
            Some((addr, bits)) => (addr, Some(bits.parse::<u8>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let net = addr.parse::<IpAddr>().map_err(|_| bad())?.to_canonical();
        let most = if net.is_ipv4() { 32 } else { 128 };
        IpNet::new(net, bits.unwrap_or(most)).map(Cidr).map_err(|_| bad())
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a connection's PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("a trusted proxy sent no PROXY header (or an invalid one): {0}")]
    Invalid(String),
    #[error("the PROXY header did not arrive whole within the request timeout")]
    Timeout,
    #[error("reading the PROXY header: {0}")]
    Io(#[from] io::Error),
}

/// Whether the first bytes `start` begin a PROXY header of either version: what a peer that is
/// not a trusted proxy is refused for sending.
pub(crate) fn looks_like_header(start: &[u8]) -> bool {
    start.starts_with(b"PROXY ") || start.starts_with(V2_SIGNATURE)
}

/// Reads the PROXY header a trusted proxy sends first, exactly, within `timeout`: the client's
/// address, or `None` when the proxy speaks for itself (a version 2 `LOCAL` header, such as its
/// health checks send, or version 1 `UNKNOWN`).
pub(crate) fn read_header(stream: &TcpStream, timeout: Duration) -> Result<Option<SocketAddr>, ProxyError> {
    // A deadline, not a timeout per read: a header trickled a byte at a time is cut off then.
    let deadline = std::time::Instant::now() + timeout;
    let wait = || -> Result<(), ProxyError> {
        let left = deadline.checked_duration_since(std::time::Instant::now()).filter(|d| !d.is_zero());
        stream.set_read_timeout(Some(left.ok_or(ProxyError::Timeout)?))?;
        Ok(())
    };
    wait()?;
    let timed_out = |e: io::Error| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ProxyError::Timeout,
        _ => ProxyError::Io(e),
    };
    // Usually the whole header came in one segment: look at it, then take exactly it.
    let mut buf = [0u8; MAX_HEADER];
    let seen = stream.peek(&mut buf).map_err(timed_out)?;
    if let Some((len, addr)) = parse(&buf[..seen])? {
        wait()?;
        (&*stream).read_exact(&mut buf[..len]).map_err(timed_out)?;
        return Ok(addr);
    }
    // Not all there yet: taken a byte at a time, so nothing past it is read.
    let mut header = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while header.len() < MAX_HEADER {
        wait()?;
        if (&*stream).read(&mut byte).map_err(timed_out)? == 0 {
            return Err(ProxyError::Invalid("the connection ended inside the header".into()));
        }
        header.push(byte[0]);
        if let Some((len, addr)) = parse(&header)? {
            debug_assert_eq!(len, header.len());
            return Ok(addr);
        }
    }
    Err(ProxyError::Invalid(format!("longer than {MAX_HEADER} bytes")))
}

/// Parses a header at the start of `bytes`: its length and the client's address; `None` if more
/// bytes are needed. Where a header ends is found here (a version 1 header at its CRLF, a version
/// 2 one by its length field), and only the whole header is handed to `ppp`: some prefixes of a
/// valid header look wrong to it rather than incomplete (a trailing space before a port).
fn parse(bytes: &[u8]) -> Result<Option<(usize, Option<SocketAddr>)>, ProxyError> {
    let prefix_of = |whole: &[u8]| bytes.len() < whole.len() && whole.starts_with(bytes);
    let bytes = if bytes.is_empty() || prefix_of(V2_SIGNATURE) || prefix_of(b"PROXY ") {
        return Ok(None);
    } else if bytes.starts_with(V2_SIGNATURE) {
        if bytes.len() < 16 {
            return Ok(None);
        }
        let total = 16 + usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
        if total > MAX_HEADER {
            return Err(ProxyError::Invalid(format!("longer than {MAX_HEADER} bytes")));
        }
        match bytes.get(..total) {
            Some(header) => header,
            None => return Ok(None),
        }
    } else if bytes.starts_with(b"PROXY ") {
        match bytes.windows(2).position(|w| w == b"\r\n") {
            Some(end) => &bytes[..end + 2],
            None if bytes.len() < V1_MAX => return Ok(None),
            None => return Err(ProxyError::Invalid(format!("no line end within {V1_MAX} bytes"))),
        }
    } else {
        return Err(ProxyError::Invalid("neither a version 1 nor a version 2 header".into()));
    };
    let result = ppp::HeaderResult::parse(bytes);
    if result.is_incomplete() {
        return Err(ProxyError::Invalid("a header that ends before its fields do".into()));
    }
    match result {
        ppp::HeaderResult::V1(Ok(header)) => {
            let addr = match header.addresses {
                ppp::v1::Addresses::Tcp4(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
                ppp::v1::Addresses::Tcp6(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
                ppp::v1::Addresses::Unknown => None,
            };
            Ok(Some((header.header.len(), addr)))
        }
        ppp::HeaderResult::V2(Ok(header)) => {
            let addr = match (header.command, header.addresses) {
                (ppp::v2::Command::Local, _) => None,
                (_, ppp::v2::Addresses::IPv4(a)) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
                (_, ppp::v2::Addresses::IPv6(a)) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
                (_, _) => None,
            };
            Ok(Some((header.len(), addr)))
        }
        ppp::HeaderResult::V1(Err(e)) => Err(ProxyError::Invalid(format!("{e:?}"))),
        ppp::HeaderResult::V2(Err(e)) => Err(ProxyError::Invalid(format!("{e:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_contain_what_they_should() {
        let r: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(r.contains("10.1.2.3".parse().unwrap()) && !r.contains("10.2.0.1".parse().unwrap()));
        assert!(r.contains("::ffff:10.1.9.9".parse().unwrap()), "mapped IPv4");
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert!(one.contains("192.0.2.7".parse().unwrap()) && !one.contains("192.0.2.8".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()) && !v6.contains("fe80::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.1".parse().unwrap()) && !all.contains("::1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "::/129", "nope", "10.0.0.0/x", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn both_versions_give_the_client_and_their_exact_length() {
        let v1 = b"PROXY TCP4 192.0.2.1 198.51.100.2 40000 9000\r\nhello";
        assert_eq!(parse(v1).unwrap(), Some((v1.len() - 5, Some("192.0.2.1:40000".parse().unwrap()))));
        assert_eq!(parse(b"PROXY UNKNOWN\r\nx").unwrap(), Some((15, None)));
        assert_eq!(parse(b"PROXY TCP4 192.0.2.1").unwrap(), None, "incomplete");
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend([0x21, 0x11, 0, 12, 203, 0, 113, 5, 10, 0, 0, 1, 0x9c, 0x40, 0x23, 0x28]);
        let len = v2.len();
        v2.extend(b"\x16\x03\x01");
        assert_eq!(parse(&v2).unwrap(), Some((len, Some("203.0.113.5:40000".parse().unwrap()))));
        assert_eq!(parse(&v2[..20]).unwrap(), None, "incomplete");
        let mut local = V2_SIGNATURE.to_vec();
        local.extend([0x20, 0x00, 0, 0]);
        assert_eq!(parse(&local).unwrap(), Some((16, None)), "LOCAL: the proxy itself");
        assert!(parse(b"GET / HTTP/1.1\r\n\r\n").is_err());
        assert!(looks_like_header(b"PROXY TCP4") && looks_like_header(&v2) && !looks_like_header(b"PUT 1 - "));
    }
}
#[cfg(test)]
mod prefixes {
    #[test]
    fn every_prefix_of_a_header_is_incomplete_not_wrong() {
        let v1 = b"PROXY TCP4 203.0.113.9 198.51.100.1 40000 9000\r\n";
        for n in 1..v1.len() {
            let r = super::parse(&v1[..n]);
            assert!(matches!(r, Ok(None)), "{n} {:?}: {r:?}", String::from_utf8_lossy(&v1[..n]));
        }
        let mut v2 = super::V2_SIGNATURE.to_vec();
        v2.extend([0x21, 0x11, 0, 12, 203, 0, 113, 5, 10, 0, 0, 1, 0x9c, 0x40, 0x23, 0x28]);
        for n in 1..v2.len() {
            assert!(matches!(super::parse(&v2[..n]), Ok(None)), "{n}");
        }
    }
}
