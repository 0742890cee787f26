//! `ftclient bench`: loads the server from many connections and prints what it measured.

use std::io::{self, Write};

use anyhow::Context;
use ft::client::bench::{BenchConfig, BenchReport};
use ft::wire::escape;

/// Runs the load `config` describes and prints its figures; fails if any request did.
pub(crate) fn run(config: &BenchConfig) -> anyhow::Result<u8> {
    let report = ft::client::bench::run(config).context("bench")?;
    print_bench(config, &report)?;
    Ok(if report.errors == 0 { 0 } else { crate::exit::FAILED })
}

fn print_bench(config: &BenchConfig, r: &BenchReport) -> io::Result<()> {
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    let ms = |q: f64| r.latency(q).as_secs_f64() * 1000.0;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "connections {}, pipeline {}, {:.2} s, {} file(s)",
        config.conns,
        config.pipeline,
        secs,
        config.names.len()
    )?;
    writeln!(out, "requests    {} ({:.0}/s)", r.requests, r.requests as f64 / secs)?;
    writeln!(out, "received    {:.1} MB ({:.1} MB/s)", r.bytes as f64 / 1e6, r.bytes as f64 / 1e6 / secs)?;
    writeln!(out, "latency     p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms", ms(0.5), ms(0.99), ms(1.0))?;
    match &r.first_error {
        Some(first) => writeln!(out, "errors      {} (the first: {})", r.errors, escape(first)),
        None => writeln!(out, "errors      {}", r.errors),
    }
}
