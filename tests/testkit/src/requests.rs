//! A client's request loop for failover measurements: one request at a time, at a
//! fixed period, each attempt timed, until stopped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netns_lab::Netns;

/// One request of a [`RequestLoop`].
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    /// When the request started.
    pub start: Instant,
    /// When it was answered or given up.
    pub end: Instant,
    /// Whether it was answered.
    pub ok: bool,
    /// Where a failed request failed, as the request function says ("" when `ok`).
    pub failed_at: &'static str,
}

/// A thread in a client's namespace running `request` every `period` until stopped.
pub struct RequestLoop {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Attempt>>,
}

impl RequestLoop {
    /// Starts calling `request` in `client`'s namespace every `period` (at once again
    /// when one takes longer); `Err` names where a request failed.
    pub fn start(
        client: &Netns,
        period: Duration,
        mut request: impl FnMut() -> Result<(), &'static str> + Send + 'static,
    ) -> RequestLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = client.thread({
            let stop = Arc::clone(&stop);
            move || {
                let mut attempts = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let outcome = request();
                    attempts.push(Attempt {
                        start,
                        end: Instant::now(),
                        ok: outcome.is_ok(),
                        failed_at: outcome.err().unwrap_or(""),
                    });
                    if let Some(rest) = period.checked_sub(start.elapsed()) {
                        std::thread::sleep(rest);
                    }
                }
                attempts
            }
        });
        RequestLoop { stop, thread }
    }

    /// Stops the loop and returns every attempt, in order.
    pub fn finish(self) -> Vec<Attempt> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the request loop panicked")
    }
}
