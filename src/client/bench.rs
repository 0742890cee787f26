//! A load generator in the spirit of redis-benchmark: `ftclient bench`.
//!
//! One thread per connection, each keeping `pipeline` `get` requests in flight for `duration`,
//! cycling through the names given. Every reply is read to its end and its digest checked, as a
//! real download would, but the bytes are not saved: this measures the server and the wire, not
//! the local disk. Latency is from a request's write to its reply's last byte, so with pipelining
//! it includes the wait behind the replies ahead of it.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::thread;
use std::time::{Duration, Instant};

use super::ClientError;
use crate::digest::Hasher;
use crate::name::Name;
use crate::wire::{self as protocol, GetHeader, ProtocolError, Request, Status};

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
}

/// What it measured.
#[derive(Debug, Clone, Default)]
pub struct BenchReport {
    pub requests: u64,
    /// File bytes received.
    pub bytes: u64,
    /// Replies that were `ERR`, or failed their digest.
    pub errors: u64,
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
        total.latencies_us.extend(r.latencies_us);
    }
    total.latencies_us.sort_unstable();
    Ok(total)
}

fn one_connection(config: &BenchConfig, index: usize, deadline: Instant) -> Result<BenchReport, ClientError> {
    let fail = |source| ClientError::Connect { addr: config.addr.clone(), source };
    let addr = config
        .addr
        .to_socket_addrs()
        .map_err(fail)?
        .next()
        .ok_or_else(|| fail(std::io::Error::new(std::io::ErrorKind::NotFound, "no address found")))?;
    let stream = TcpStream::connect_timeout(&addr, config.timeout).map_err(fail)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(config.timeout))?;
    let mut reader = BufReader::with_capacity(256 << 10, stream.try_clone()?);
    let mut writer = BufWriter::new(stream);
    let mut line = Vec::new();
    let mut report = BenchReport::default();
    let mut sent_at = VecDeque::new();
    let mut next = index;
    loop {
        let sending = Instant::now() < deadline;
        while sending && sent_at.len() < config.pipeline.max(1) {
            writeln!(writer, "{}", Request::Get(config.names[next % config.names.len()].clone()))?;
            next += 1;
            sent_at.push_back(Instant::now());
        }
        writer.flush()?;
        let Some(sent) = sent_at.pop_front() else { return Ok(report) };
        match protocol::read_status(&mut reader, &mut line)? {
            Status::Err(_) => report.errors += 1,
            Status::Ok(fields) => {
                let header = GetHeader::parse(&fields)?;
                let mut hasher = Hasher::default();
                let mut left = header.len;
                while left > 0 {
                    let chunk = reader.fill_buf()?;
                    if chunk.is_empty() {
                        return Err(ClientError::ShortBody { expected: header.len, received: header.len - left });
                    }
                    let n = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    hasher.update(&chunk[..n]);
                    reader.consume(n);
                    left -= n as u64;
                }
                if hasher.digest() == header.digest {
                    report.bytes += header.len;
                } else {
                    report.errors += 1;
                }
            }
        }
        report.requests += 1;
        report.latencies_us.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
    }
}
