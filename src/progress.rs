//! Progress of a long call: the bytes done and the bytes known to be left, shared between the
//! library, which counts, and whoever shows them (the command-line tool's bar).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Two shared counters. Cloning gives another handle on the same counters.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    done: Arc<AtomicU64>,
    total: Arc<AtomicU64>,
}

impl Progress {
    /// Counters at zero done out of `total`.
    pub fn new(total: u64) -> Progress {
        Progress {
            done: Arc::new(AtomicU64::new(0)),
            total: Arc::new(AtomicU64::new(total)),
        }
    }

    /// Adds work learnt of on the way (the bytes of an output, known once a replay is done).
    pub fn add_total(&self, bytes: u64) {
        self.total.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The work known so far.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The work done so far.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// The done counter, for calls that add to it while they run.
    pub fn counter(&self) -> &AtomicU64 {
        &self.done
    }

    /// The done counter, for calls that keep it beyond a borrow (threads, stored states).
    pub fn shared_counter(&self) -> Arc<AtomicU64> {
        self.done.clone()
    }
}
