//! Stopping a running server: at once, or first telling load balancers it is draining.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use parking_lot::Mutex;

/// Stops a running [`Server::run`](super::Server::run): sets a flag and wakes the blocked `accept` by connecting.
#[derive(Clone, Default)]
pub struct Shutdown(Arc<ShutdownState>);

#[derive(Default)]
struct ShutdownState {
    triggered: AtomicBool,
    /// Set by [`Shutdown::drain_then_stop`]: `health` says draining while connections are still
    /// accepted.
    draining: AtomicBool,
    /// Where the listener is, to wake its `accept`.
    addr: Mutex<Option<SocketAddr>>,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    pub fn trigger(&self) {
        self.0.triggered.store(true, Ordering::SeqCst);
        if let Some(addr) = *self.0.addr.lock() {
            let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        }
    }

    pub fn is_triggered(&self) -> bool {
        self.0.triggered.load(Ordering::SeqCst)
    }

    /// Starts a graceful shutdown that first tells load balancers: `health` answers
    /// `ERR draining` at once, while clients are still accepted and served for `delay` (the time
    /// a balancer takes to see it and send new clients elsewhere); then it stops accepting and
    /// lets connections finish ([`Shutdown::trigger`]). A later `trigger` cuts the delay short.
    pub fn drain_then_stop(&self, delay: Duration) -> io::Result<()> {
        self.0.draining.store(true, Ordering::SeqCst);
        if delay.is_zero() {
            self.trigger();
            return Ok(());
        }
        let this = self.clone();
        thread::Builder::new().name("drain".into()).spawn(move || {
            thread::sleep(delay);
            this.trigger();
        })?;
        Ok(())
    }

    /// Whether the server is shutting down, or about to.
    pub fn is_draining(&self) -> bool {
        self.0.draining.load(Ordering::SeqCst) || self.is_triggered()
    }

    pub(super) fn arm(&self, mut addr: SocketAddr) {
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() { Ipv4Addr::LOCALHOST.into() } else { Ipv6Addr::LOCALHOST.into() });
        }
        *self.0.addr.lock() = Some(addr);
    }
}
