//! How many downloads one connection keeps in flight: enough to fill the path, which holds the
//! bandwidth-delay product (the rate replies arrive at, times the round trip), so small files do
//! not each wait a round trip, and no more than the socket buffers can hold of requests while
//! the server is itself blocked sending, which would deadlock.
//!
//! The round trip is the time TCP's connect took (one SYN and its answer). The rate is measured
//! over each round trip from the replies read, and the window set to four times what that rate
//! carries in a round trip, in replies of the average size so far: while the window is what
//! limits, the rate is the window over the round trip, so the window grows each round trip
//! (faster than TCP's own slow start) until the link is what limits.

use std::time::{Duration, Instant};

/// The fewest requests in flight (and all of them on a path whose round trip is too short to
/// measure, as on this machine).
pub const WINDOW: usize = 128;

/// The most requests in flight.
pub const MAX_WINDOW: usize = 1024;

/// A round trip from which waiting for one costs something: work is asked for ahead (a tree's
/// files before its listing ends, an upload's questions before its turn).
pub const MEANINGFUL_RTT: Duration = Duration::from_millis(1);

/// The most bytes of requests (their lines and any signatures after them) in flight: well within
/// what a server's receive buffer and this side's send buffer hold between them.
pub const MAX_REQUEST_BYTES: usize = 48 << 10;

/// How many round trips' worth of replies are asked for ahead. Refilled at half, the window
/// then never holds less than two, which keeps the path full through a loss's recovery and
/// ahead of TCP's own growth while it starts.
const LEAD: f64 = 4.0;

/// Bytes a reply costs beyond its file's: its status line and trailer.
const REPLY_OVERHEAD: u64 = 64;

/// The window of one pipeline.
#[derive(Debug)]
pub(super) struct Window {
    rtt: Duration,
    size: usize,
    /// Bytes and replies read so far.
    bytes: u64,
    replies: u64,
    /// Where the current round trip's measure began: when, and the bytes read by then.
    mark: Option<(Instant, u64)>,
}

impl Window {
    /// A window for a path of round trip `rtt`.
    pub(super) fn new(rtt: Duration) -> Window {
        Window { rtt, size: WINDOW, bytes: 0, replies: 0, mark: None }
    }

    /// How many requests may be in flight now.
    pub(super) fn size(&self) -> usize {
        self.size
    }

    /// Requests are on their way: the measure starts with the first.
    pub(super) fn sent(&mut self, now: Instant) {
        self.mark.get_or_insert((now, 0));
    }

    /// A reply of `bytes` (its file's bytes that crossed the wire) was read at `now`.
    pub(super) fn answered(&mut self, bytes: u64, now: Instant) {
        self.bytes += bytes + REPLY_OVERHEAD;
        self.replies += 1;
        let Some((since, then)) = self.mark else { return };
        let took = now.saturating_duration_since(since);
        // A round trip too short to measure (loopback): the floor is plenty.
        if self.rtt < MEANINGFUL_RTT || took < self.rtt {
            return;
        }
        let rate = (self.bytes - then) as f64 / took.as_secs_f64();
        let average = self.bytes as f64 / self.replies as f64;
        let carried = LEAD * rate * self.rtt.as_secs_f64() / average;
        self.size = (carried.ceil() as usize).clamp(WINDOW, MAX_WINDOW);
        self.mark = Some((now, self.bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A path of `rtt` and `rate` bytes a second, replies of `reply` bytes each: the window
    /// after `rounds` round trips in which each delivers what the window (or the link) allows.
    fn settle(rtt: Duration, rate: f64, reply: u64, rounds: u32) -> usize {
        let mut w = Window::new(rtt);
        let start = Instant::now();
        w.sent(start);
        for round in 1..=rounds {
            let link = (rate * rtt.as_secs_f64() / (reply + REPLY_OVERHEAD) as f64) as usize;
            let delivered = w.size().min(link.max(1));
            let at = start + rtt * round;
            for _ in 0..delivered {
                w.answered(reply, at);
            }
        }
        w.size()
    }

    #[test]
    fn the_window_grows_to_the_bandwidth_delay_product_and_stays_within_bounds() {
        // 100 Mbit/s, 80 ms, 4 KiB files: the link carries about 240 a round trip.
        let size = settle(Duration::from_millis(80), 12.5e6, 4096, 10);
        assert!((800..=1024).contains(&size), "{size}");
        let size = settle(Duration::from_millis(20), 12.5e6, 4096, 10);
        assert!((200..=300).contains(&size), "{size}");
        // A fast long path: the most.
        assert_eq!(settle(Duration::from_millis(20), 125e6, 4096, 10), MAX_WINDOW);
        // Big files, or loopback: the floor.
        assert_eq!(settle(Duration::from_millis(40), 12.5e6, 64 << 20, 10), WINDOW);
        assert_eq!(settle(Duration::from_micros(50), 1e9, 4096, 10), WINDOW);
    }
}
