//! The bounded line reader both sides use, and the errors of reading the wire.

use std::io::{self, BufRead};

use crate::name::MAX_NAME_LEN;

/// Longest request line the server reads, in bytes, excluding the line feed.
pub const MAX_REQUEST_LINE: usize = 4096;
/// Longest reply line a client reads: a list entry is a few numbers, a name and (for a symlink)
/// its target, each escaped (at most three bytes on the wire per byte).
pub const MAX_REPLY_LINE: usize = 3 * (MAX_NAME_LEN + MAX_TARGET_LEN) + 256;
/// Longest symlink target an entry carries, in bytes (Linux's `PATH_MAX` less its NUL).
pub const MAX_TARGET_LEN: usize = 4095;

/// Errors reading or decoding the wire. After any of these the stream is out of step.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("connection closed in the middle of a line")]
    TruncatedLine,
    #[error("connection closed before the reply")]
    Closed,
    #[error("malformed reply: {0}")]
    Malformed(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads one line into `buf` (without the LF; a trailing CR is kept for the parser to drop).
///
/// Returns `Ok(false)` on a clean end of stream before any byte of a line, `Ok(true)` with a
/// line in `buf` otherwise. Never buffers more than `cap` bytes of one line.
pub fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>, cap: usize) -> Result<bool, ProtocolError> {
    read_line_with(r, buf, cap, || Ok(()))
}

/// [`read_line`], calling `more` before each read after the first, when the line is still
/// incomplete (the server uses it to shrink the socket timeout to the line's deadline).
pub fn read_line_with(
    r: &mut impl BufRead,
    buf: &mut Vec<u8>,
    cap: usize,
    mut more: impl FnMut() -> io::Result<()>,
) -> Result<bool, ProtocolError> {
    buf.clear();
    let mut first = true;
    loop {
        if !first {
            more()?;
        }
        first = false;
        let avail = match r.fill_buf() {
            Ok(avail) => avail,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if avail.is_empty() {
            return if buf.is_empty() { Ok(false) } else { Err(ProtocolError::TruncatedLine) };
        }
        let (chunk, found) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (&avail[..i], true),
            None => (avail, false),
        };
        if buf.len() + chunk.len() > cap {
            return Err(ProtocolError::LineTooLong(cap));
        }
        buf.extend_from_slice(chunk);
        let used = chunk.len() + usize::from(found);
        r.consume(used);
        if found {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    #[test]
    fn read_line_handles_eof_crlf_and_the_cap() {
        let mut r = BufReader::with_capacity(4, &b"ab\r\ncdefgh\nlast"[..]);
        let mut buf = Vec::new();
        assert!(read_line(&mut r, &mut buf, 16).unwrap());
        assert_eq!(buf, b"ab\r");
        assert!(read_line(&mut r, &mut buf, 16).unwrap());
        assert_eq!(buf, b"cdefgh");
        assert!(matches!(read_line(&mut r, &mut buf, 16), Err(ProtocolError::TruncatedLine)));

        let mut r = BufReader::new(&b""[..]);
        assert!(!read_line(&mut r, &mut buf, 16).unwrap());

        let long = [b'x'; 100];
        let mut r = BufReader::with_capacity(8, &long[..]);
        assert!(matches!(read_line(&mut r, &mut buf, 16), Err(ProtocolError::LineTooLong(16))));
        assert!(buf.len() <= 16);
    }
}
