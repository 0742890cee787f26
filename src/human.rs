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
}
