//! At most one log line an interval for an event that can happen on every request.
//!
//! A failure that hits every request (Kafka down, a flood of bad clients) must not become a log
//! line per request: the log would cost more than the requests and bury everything else. The
//! event is still counted on every occurrence (in a metric); its line says how many happened
//! since the last one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Lets one occurrence of an event through to the log per interval.
#[derive(Debug)]
pub struct LogThrottle {
    every_ms: u64,
    /// Milliseconds since `epoch()` at which the next line may be written.
    next_ms: AtomicU64,
    /// Occurrences since the last line was written (that one included).
    pending: AtomicU64,
}

impl LogThrottle {
    /// A throttle writing at most one line every `every`; the first occurrence is always written.
    pub fn new(every: Duration) -> Self {
        Self {
            every_ms: every.as_millis().max(1) as u64,
            next_ms: AtomicU64::new(0),
            pending: AtomicU64::new(0),
        }
    }

    /// Records an occurrence. `Some(n)` when a line is due now: `n` occurrences since the last
    /// line, this one included. Lock-free; one caller wins when several race for the same line.
    pub fn admit(&self) -> Option<u64> {
        self.pending.fetch_add(1, Ordering::Relaxed);
        let now = epoch().elapsed().as_millis() as u64;
        let next = self.next_ms.load(Ordering::Relaxed);
        if now < next {
            return None;
        }
        self.next_ms
            .compare_exchange(
                next,
                now + self.every_ms,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .ok()?;
        Some(self.pending.swap(0, Ordering::AcqRel).max(1))
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_first_occurrence_then_one_line_an_interval_with_the_count() {
        let throttle = LogThrottle::new(Duration::from_secs(3600));
        assert_eq!(throttle.admit(), Some(1), "the first occurrence is written");
        for _ in 0..99 {
            assert_eq!(
                throttle.admit(),
                None,
                "within the interval: counted, not written"
            );
        }
        // Make the next line due without waiting an hour.
        throttle.next_ms.store(0, Ordering::Relaxed);
        assert_eq!(throttle.admit(), Some(100), "the 99 held back and this one");
        assert_eq!(throttle.admit(), None);
    }

    #[test]
    fn racing_callers_write_one_line() {
        let throttle = std::sync::Arc::new(LogThrottle::new(Duration::from_secs(3600)));
        let written: u64 = (0..8)
            .map(|_| {
                let throttle = throttle.clone();
                std::thread::spawn(move || {
                    (0..1000).filter(|_| throttle.admit().is_some()).count() as u64
                })
            })
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(written, 1);
    }
}
