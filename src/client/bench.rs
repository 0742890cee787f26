//! A load generator in the spirit of redis-benchmark: `ftclient bench`.
//!
//! One thread per connection, each keeping `pipeline` `get` requests in flight for `duration`,
//! cycling through the names given. Each connection is a [`Client`], so it connects, reads and
//! verifies exactly as a real download does (every reply read to its end, its digest checked),
//! but the bytes are not saved: this measures the server and the wire, not
//! the local disk. Latency is from a request's write to its reply's last byte, so with pipelining
//! it includes the wait behind the replies ahead of it.

use std::collections::VecDeque;
use std::io;
use std::thread;
use std::time::{Duration, Instant};

use super::trust::TlsOptions;
use super::{Client, ClientError};
use crate::name::Name;
use crate::wire::{ProtocolError, Request, Secret};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// `host:port` of the server.
    pub addr: String,
    pub names: Vec<Name>,
    pub conns: usize,
    pub duration: Duration,
    /// Requests each connection keeps in flight (1: request, reply, request, ...).
    pub pipeline: usize,
    /// Connect and read timeout.
    pub timeout: Duration,
    /// When to speak TLS and whom to trust.
    pub tls: TlsOptions,
    /// A token to present on each connection.
    pub token: Option<Secret>,
}

/// What it measured.
#[derive(Debug, Clone, Default)]
pub struct BenchReport {
    pub requests: u64,
    /// File bytes received.
    pub bytes: u64,
    /// Replies that were `ERR`, or failed their digest.
    pub errors: u64,
    /// What the first of those errors was (`NAME: cause`), so a run full of errors says why.
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// Every request's latency in microseconds, sorted.
    pub latencies_us: Vec<u32>,
}

impl BenchReport {
    /// The latency at quantile `q` (0..=1).
    pub fn latency(&self, q: f64) -> Duration {
        if self.latencies_us.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies_us.len() - 1) as f64 * q).round() as usize;
        Duration::from_micros(u64::from(self.latencies_us[i]))
    }
}

/// Runs the benchmark; fails if any connection cannot be made or breaks.
pub fn run(config: &BenchConfig) -> Result<BenchReport, ClientError> {
    let started = Instant::now();
    let deadline = started + config.duration;
    let results: Vec<Result<BenchReport, ClientError>> = thread::scope(|scope| {
        let workers: Vec<_> =
            (0..config.conns).map(|i| scope.spawn(move || one_connection(config, i, deadline))).collect();
        workers.into_iter().map(|w| w.join().unwrap_or(Err(ClientError::Protocol(ProtocolError::Closed)))).collect()
    });
    let mut total = BenchReport { elapsed: started.elapsed(), ..BenchReport::default() };
    for result in results {
        let r = result?;
        total.requests += r.requests;
        total.bytes += r.bytes;
        total.errors += r.errors;
        total.first_error = total.first_error.or(r.first_error);
        total.latencies_us.extend(r.latencies_us);
    }
    total.latencies_us.sort_unstable();
    Ok(total)
}

fn one_connection(config: &BenchConfig, index: usize, deadline: Instant) -> Result<BenchReport, ClientError> {
    let mut client = Client::connect_with(&config.addr, config.timeout, &config.tls)?;
    if let Some(token) = &config.token {
        client.authenticate(token)?;
    }
    let mut report = BenchReport::default();
    let mut in_flight = VecDeque::new();
    let mut next = index;
    loop {
        let sending = Instant::now() < deadline;
        while sending && in_flight.len() < config.pipeline.max(1) {
            let name = &config.names[next % config.names.len()];
            client.send(&Request::Get(name.clone()))?;
            next += 1;
            in_flight.push_back((name, Instant::now()));
        }
        client.flush()?;
        let Some((name, sent)) = in_flight.pop_front() else { return Ok(report) };
        match client.receive_to(name, &mut io::sink()) {
            Ok(header) => report.bytes += header.len,
            // The reply was read to its end: the connection goes on.
            Err(e @ (ClientError::Server(_) | ClientError::Integrity { .. })) => {
                report.errors += 1;
                report.first_error.get_or_insert_with(|| format!("{name}: {e}"));
            }
            Err(e) => return Err(e),
        }
        report.requests += 1;
        report.latencies_us.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
    }
}
