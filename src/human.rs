//! Sizes and times as people read them, for the binaries' human output (machine output keeps
//! exact bytes and RFC 3339 UTC times).

use std::time::{Duration, UNIX_EPOCH};

/// `512 B`, `4.0 KiB`, `64 MiB`, `1.5 GiB`: binary units, one decimal unless whole.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Parses a duration flag (`500ms`, `30s`, `10m`, `1h 30m`), saying what was expected if it cannot.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (expected a duration such as 500ms, 30s, 10m, 1h)"))
}

/// An error and its causes on one line, `outer: inner: innermost`, leaving out a cause whose text
/// the line already ends with (an error that shows its source in its own message, as
/// `cannot connect to HOST: Connection refused` does, would otherwise repeat it).
pub fn chain<'a>(causes: impl IntoIterator<Item = &'a (dyn std::error::Error + 'static)>) -> String {
    let mut line = String::new();
    for cause in causes {
        let text = cause.to_string();
        if text.is_empty() || line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// A byte count as a flag takes it (`64MiB`, `1GiB`, `1000000`) and as help shows it (`64MiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&size(self.0).replace(' ', ""))
    }
}

impl std::str::FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Size, String> {
        parse_size::parse_size(s)
            .map(Size)
            .map_err(|e| format!("{e} (expected bytes, or a size such as 64MiB or 1GiB)"))
    }
}

/// A duration as a flag takes it and as help shows it (`500ms`, `30s`, `5m`, `1h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        humantime::format_duration(self.0).fmt(f)
    }
}

impl std::str::FromStr for Span {
    type Err = String;
    fn from_str(s: &str) -> Result<Span, String> {
        parse_duration(s).map(Span)
    }
}

/// Seconds since the Unix epoch as RFC 3339 UTC, `1970-01-01T00:00:00Z` for anything earlier.
pub fn utc(unix_seconds: i64) -> String {
    let secs = u64::try_from(unix_seconds).unwrap_or(0);
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_times() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(4096), "4 KiB");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(64 << 20), "64 MiB");
        assert_eq!(size(u64::MAX), "16384 PiB");
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(-5), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_795_520_085), "2026-11-24T11:34:45Z");
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("soon").unwrap_err().contains("expected a duration"));
    }

    #[test]
    fn a_chain_says_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot connect to h:1: {source}")]
        struct Connect {
            source: std::io::Error,
        }
        let refused = || std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = anyhow::Error::new(Connect { source: refused() }).context("list");
        let line = chain(e.chain());
        assert_eq!(line, format!("list: cannot connect to h:1: {}", refused()));
        assert_eq!(line.matches(&refused().to_string()).count(), 1);
    }

    #[test]
    fn flag_values_read_back_as_shown() {
        for bytes in [0, 1000, 4096, 64 << 20, 1 << 30, 1536] {
            assert_eq!(Size(bytes).to_string().parse(), Ok(Size(bytes)), "{bytes}");
        }
        assert_eq!("64MiB".parse(), Ok(Size(64 << 20)));
        assert!("lots".parse::<Size>().unwrap_err().contains("expected bytes"));
        for secs in [1, 30, 60, 300, 3600, 5400] {
            let span = Span(Duration::from_secs(secs));
            assert_eq!(span.to_string().parse(), Ok(span), "{span}");
        }
        assert_eq!(Span(Duration::from_secs(3600)).to_string(), "1h");
        assert_eq!(Span(Duration::from_millis(500)).to_string(), "500ms");
    }
}
