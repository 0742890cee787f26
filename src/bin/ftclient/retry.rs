//! `--retry`: which failures may pass if tried again, and the waits between tries.

use std::sync::Arc;
use std::time::Duration;

use ft::client::{Client, ClientError};
use ft::human::Span;
use ft::wire::ErrorCode;

use crate::progress::{Bar, say};

/// What is left of `--retry` for this command, and the wait before the next.
#[derive(Clone, Copy)]
pub(crate) struct Retry {
    left: u32,
    delay: Duration,
}

impl Retry {
    /// `--retry N` with its first wait.
    pub(crate) fn new(left: u32, delay: Duration) -> Retry {
        Retry { left, delay }
    }
}

impl Retry {
    /// After a transient failure `why`: says so, waits, and returns true; false if no retries
    /// are left.
    pub(crate) fn again(&mut self, bar: Option<&Arc<Bar>>, why: &str) -> bool {
        if self.left == 0 {
            return false;
        }
        say(bar, &format!("ftclient: {why}; retrying in {} ({} left)", Span(self.delay), self.left));
        std::thread::sleep(self.delay);
        self.left -= 1;
        self.delay = (self.delay * 2).min(Duration::from_secs(60));
        true
    }

    /// A new connection, tried again after a transient failure while retries are left.
    pub(crate) fn connect(
        &mut self,
        connect: &(dyn Fn() -> Result<Client, ClientError> + Sync),
        bar: Option<&Arc<Bar>>,
    ) -> Result<Client, ClientError> {
        loop {
            match connect() {
                Err(e) if transient_client(&e) && self.again(bar, &client_chain(&e)) => continue,
                other => return other,
            }
        }
    }
}

/// Whether a failure may pass if tried again: the connection could not be made or was lost, a
/// reply did not come in time, or the server was busy.
pub(crate) fn transient_client(e: &ClientError) -> bool {
    match e {
        ClientError::Connect { .. }
        | ClientError::Network(_)
        | ClientError::Timeout
        | ClientError::ShortBody { .. }
        | ClientError::Broken
        | ClientError::Protocol(ft::wire::ProtocolError::Closed | ft::wire::ProtocolError::TruncatedLine) => true,
        ClientError::Server(reply) => reply.kind() == Some(ErrorCode::Busy),
        _ => false,
    }
}

/// A client error with its causes, as one line.
pub(crate) fn client_chain(e: &ClientError) -> String {
    ft::human::chain(std::iter::successors(Some(e as &(dyn std::error::Error + 'static)), |e| e.source()))
}
