//! Load generator for `bench/compare.sh`: the same client design against ftserver and against an
//! HTTP server, so their request rates compare fairly. One blocking connection per thread, one
//! request at a time (no pipelining), HTTP/1.1 keep-alive or ft's `get NAME`.
//!
//! ```text
//! load http|ft PORT NAME CONNS SECONDS   prints "requests/s N errors E"
//! load idle PORT NAME CONNS SECONDS      holds CONNS idle connections for SECONDS, then sends one
//!                                        `get NAME` on each: prints "held N served M"
//! ```
//! Built by `cargo build --release --example load`; not part of ft itself.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, port, name, conns, secs] = args.as_slice() else {
        eprintln!("usage: load http|ft|idle PORT NAME CONNS SECONDS");
        return ExitCode::from(2);
    };
    let (Ok(conns), Ok(secs)) = (conns.parse::<usize>(), secs.parse::<f64>()) else {
        eprintln!("load: CONNS is a count and SECONDS a number");
        return ExitCode::from(2);
    };
    let addr = format!("127.0.0.1:{port}");
    let duration = Duration::from_secs_f64(secs);
    match mode.as_str() {
        "idle" => idle(&addr, name, conns, duration),
        "http" | "ft" => rate(&addr, name, mode == "http", conns, duration),
        _ => {
            eprintln!("load: the mode is http, ft or idle");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}

fn rate(addr: &str, name: &str, http: bool, conns: usize, duration: Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let request = if http { format!("GET /{name} HTTP/1.1\r\nHost: bench\r\n\r\n") } else { format!("get {name}\n") };
    let start = Instant::now();
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            let (addr, request) = (addr.to_string(), request.clone());
            let (stop, done, errors) = (stop.clone(), done.clone(), errors.clone());
            std::thread::spawn(move || {
                let mut served = 0;
                if let Err(e) = client(&addr, request.as_bytes(), http, &stop, &mut served) {
                    eprintln!("load: {e}");
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(served, Ordering::Relaxed);
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        let _ = thread.join();
    }
    let rate = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    println!("requests/s {rate:.0} errors {}", errors.load(Ordering::Relaxed));
}

/// One connection asking for the same file until `stop`, counting replies read whole.
fn client(addr: &str, request: &[u8], http: bool, stop: &AtomicBool, served: &mut u64) -> io::Result<()> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::with_capacity(64 << 10, stream);
    let mut line = String::new();
    let mut body = vec![0u8; 1 << 20];
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    while !stop.load(Ordering::Relaxed) {
        out.write_all(request)?;
        line.clear();
        reader.read_line(&mut line)?;
        let len: u64 = if http {
            if !line.starts_with("HTTP/1.1 200") {
                return Err(bad(&format!("reply {:?}", line.trim_end())));
            }
            let mut len = None;
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().ok();
                }
            }
            len.ok_or_else(|| bad("no content-length"))?
        } else {
            let mut fields = line.split_whitespace();
            if fields.next() != Some("OK") {
                return Err(bad(&format!("reply {:?}", line.trim_end())));
            }
            fields.next().and_then(|n| n.parse().ok()).ok_or_else(|| bad("no size"))?
        };
        let mut left = len;
        while left > 0 {
            let k = left.min(body.len() as u64) as usize;
            reader.read_exact(&mut body[..k])?;
            left -= k as u64;
        }
        *served += 1;
    }
    Ok(())
}

fn idle(addr: &str, name: &str, conns: usize, duration: Duration) {
    let mut held = Vec::with_capacity(conns);
    for _ in 0..conns {
        match TcpStream::connect(addr) {
            Ok(s) => held.push(s),
            Err(e) => {
                eprintln!("load: connect failed after {}: {e}", held.len());
                break;
            }
        }
    }
    std::thread::sleep(duration);
    let request = format!("get {name}\n");
    for s in &mut held {
        let _ = s.write_all(request.as_bytes());
    }
    let mut served = 0;
    for s in &held {
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let mut line = String::new();
        if BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("OK") {
            served += 1;
        }
    }
    println!("held {} served {served}", held.len());
}
