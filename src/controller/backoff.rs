//! Per-object exponential backoff for transient errors.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Remembers how often each object failed in a row.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    const BASE: Duration = Duration::from_secs(2);
    const MAX: Duration = Duration::from_secs(300);

    /// Record a failure of `key`; returns how long to wait before retrying
    /// (2s, 4s, 8s … up to 5 minutes).
    pub fn failed(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().expect("backoff lock poisoned");
        let n = failures.entry(key.to_string()).or_default();
        *n = n.saturating_add(1);
        Self::BASE
            .saturating_mul(1u32 << (*n - 1).min(16))
            .min(Self::MAX)
    }

    /// Forget the failures of `key` after a success.
    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .expect("backoff lock poisoned")
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_cap_and_resets_on_success() {
        let b = Backoff::default();
        assert_eq!(b.failed("a"), Duration::from_secs(2));
        assert_eq!(b.failed("a"), Duration::from_secs(4));
        assert_eq!(b.failed("b"), Duration::from_secs(2));
        for _ in 0..20 {
            b.failed("a");
        }
        assert_eq!(b.failed("a"), Duration::from_secs(300));
        b.succeeded("a");
        assert_eq!(b.failed("a"), Duration::from_secs(2));
    }
}
