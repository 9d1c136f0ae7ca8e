//! Where the controllers read the time, and whether they may write. The operator reads the system clock; tests
//! hand in a clock of their own, so that retention, backoff and schedules are tested
//! by moving time forward instead of waiting for it.

use std::fmt;
use std::sync::Arc;

use jiff::Timestamp;

/// The controllers' source of `now`.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> Timestamp + Send + Sync>);

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Self {
        Self(Arc::new(Timestamp::now))
    }

    /// A clock that reads `now` from the given function.
    pub fn from_fn(now: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        Self(Arc::new(now))
    }

    /// The current time by this clock.
    pub fn now(&self) -> Timestamp {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Clock({})", self.now())
    }
}

/// Whether this process may write now: it holds the Lease (when it elects a
/// leader) and is not stopping. Runs ask before every batch of writes.
#[derive(Clone)]
pub struct Fence(Arc<dyn Fn() -> bool + Send + Sync>);

impl Fence {
    /// Always open: a single replica without leader election.
    pub fn open() -> Self {
        Self(Arc::new(|| true))
    }

    /// Open while `holding` says so.
    pub fn from_fn(holding: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(holding))
    }

    /// Whether writes may go ahead now.
    pub fn is_open(&self) -> bool {
        (self.0)()
    }
}

impl Default for Fence {
    fn default() -> Self {
        Self::open()
    }
}

impl fmt::Debug for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fence(open: {})", self.is_open())
    }
}
