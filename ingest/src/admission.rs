//! Admission: how many beacon requests are processed at once, and what happens to the next ones.
//!
//! `ingest.max_in_flight` requests are processed at once (each holds a slot until Kafka has
//! answered). A request that finds every slot taken waits for one, up to `ingest.queue_timeout_ms`,
//! with at most `ingest.max_queued` requests waiting; beyond either bound it is answered 503
//! `overloaded` at once.
//!
//! By default nothing waits (`max_queued` 0): overload is shed at once, connection and all (the
//! 503 closes it, see `IngestError::into_response`). Why a deployment may want a line: refusing is
//! not free. A refused request is read, parsed and answered, about half the cost of an accepted
//! one, and the refused client comes back. Under a 2x overload the refusals took most of the CPU,
//! and each request holding a slot waited behind thousands of them for its turn to answer, so
//! the ingest accepted a fraction of its capacity (`bench/RESULTS.md`). A waiting request costs
//! no CPU until a slot frees, and a beacon refused is a beacon lost (browsers do not resend):
//! with a line the ingest keeps accepting at its capacity. The price is the waiting requests'
//! memory; the bounds keep it and latency bounded.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

/// The slots and the waiting line in front of them.
pub struct Admission {
    slots: Semaphore,
    max_in_flight: usize,
    waiting: AtomicUsize,
    max_queued: usize,
    queue_timeout: Duration,
}

/// No slot within the bounds: answer 503 `overloaded`.
#[derive(Debug, PartialEq, Eq)]
pub struct Overloaded;

impl Admission {
    /// `max_in_flight` slots; up to `max_queued` requests wait up to `queue_timeout` for one.
    pub fn new(max_in_flight: usize, max_queued: usize, queue_timeout: Duration) -> Self {
        Self {
            slots: Semaphore::new(max_in_flight),
            max_in_flight,
            waiting: AtomicUsize::new(0),
            max_queued,
            queue_timeout,
        }
    }

    /// A slot, held until the permit is dropped.
    pub async fn enter(&self) -> Result<SemaphorePermit<'_>, Overloaded> {
        if let Ok(permit) = self.slots.try_acquire() {
            return Ok(permit);
        }
        // Counted before it waits, uncounted however the wait ends (also when the client goes
        // away and the request's future is dropped).
        let place = Place::take(&self.waiting, self.max_queued).ok_or(Overloaded)?;
        let permit = tokio::time::timeout(self.queue_timeout, self.slots.acquire()).await;
        drop(place);
        match permit {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; timed out.
            _ => Err(Overloaded),
        }
    }

    /// Requests being processed now.
    pub fn in_flight(&self) -> usize {
        self.max_in_flight - self.slots.available_permits()
    }

    /// Requests waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

/// A place in the waiting line; leaving it (drop) frees it.
struct Place<'a>(&'a AtomicUsize);

impl<'a> Place<'a> {
    fn take(waiting: &'a AtomicUsize, max: usize) -> Option<Place<'a>> {
        waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Place(waiting))
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_a_slot_within_its_bounds_and_refuses_beyond_them() {
        let admission = Admission::new(1, 1, Duration::from_millis(50));
        let held = admission.enter().await.expect("a free slot");
        assert_eq!(admission.in_flight(), 1);

        // The line holds one: a second waiter is refused at once, whatever the timeout.
        let first = admission.enter();
        tokio::pin!(first);
        assert!(futures_poll(&mut first).is_none(), "waits for the slot");
        assert_eq!(admission.queued(), 1);
        assert_eq!(admission.enter().await.unwrap_err(), Overloaded);

        // The slot frees before the timeout: the waiter gets it.
        drop(held);
        let permit = first.await.expect("the freed slot");
        assert_eq!((admission.in_flight(), admission.queued()), (1, 0));

        // No slot frees: refused after the timeout, and its place in the line is given back.
        let started = std::time::Instant::now();
        assert_eq!(admission.enter().await.unwrap_err(), Overloaded);
        assert!(
            started.elapsed() >= Duration::from_millis(50),
            "waited its timeout first"
        );
        assert_eq!(admission.queued(), 0);

        // A waiter that goes away (its request dropped) gives its place back too.
        let mut gone = Box::pin(admission.enter());
        assert!(futures_poll(&mut gone).is_none());
        assert_eq!(admission.queued(), 1);
        drop(gone);
        drop(permit);
        assert_eq!((admission.in_flight(), admission.queued()), (0, 0));
    }

    #[tokio::test]
    async fn without_a_line_a_busy_ingest_refuses_at_once() {
        let admission = Admission::new(1, 0, Duration::from_secs(3600));
        let _held = admission.enter().await.unwrap();
        assert_eq!(admission.enter().await.unwrap_err(), Overloaded);
        assert_eq!(admission.queued(), 0);
    }

    /// Polls a future once.
    fn futures_poll<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
        let waker = std::task::Waker::noop();
        match std::pin::Pin::new(f).poll(&mut std::task::Context::from_waker(waker)) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }
}
