//! Where an ft connection sends a body: its buffered transport. Bytes from memory join the
//! header in the write buffer; a file's bytes leave by `sendfile` over plain TCP (the kernel moves
//! them from the page cache to the socket, with no copy through this process) and are copied
//! through the transport otherwise (TLS encrypts them here). The socket's send timeout bounds
//! every call, as it does a `write`.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

use crate::server::send::Sink;
use crate::transport::BufStream;

/// An ft connection's stream, as a [`Sink`].
pub(crate) struct StreamSink<'s>(pub(crate) &'s mut BufStream);

impl Sink for StreamSink<'_> {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes)
    }

    /// The header is held back to leave with the body's first bytes, unless there is no body.
    fn before_file(&mut self, len: u64) -> io::Result<()> {
        if len > 0 { self.0.flush_before_file() } else { self.0.flush() }
    }

    fn send_at(&mut self, file: &File, offset: u64, most: usize, scratch: &mut [u8]) -> io::Result<usize> {
        match self.0.get_ref().sendfile_fd() {
            Some(socket) => {
                let mut at = offset;
                Ok(rustix::fs::sendfile(socket, file, Some(&mut at), most)?)
            }
            None => {
                let want = most.min(scratch.len());
                let n = file.read_at(&mut scratch[..want], offset)?;
                self.0.get_mut().write_all(&scratch[..n])?;
                Ok(n)
            }
        }
    }

    fn copies(&self) -> bool {
        self.0.get_ref().sendfile_fd().is_none()
    }

    fn after_file(&mut self) -> io::Result<()> {
        if self.copies() { self.0.get_mut().flush() } else { Ok(()) }
    }
}
