//! Run ids: sortable by time, unique enough to name one run in an annotation.

use std::hash::{BuildHasher, Hasher};

/// A new run id such as `20261123-150405-3fa2`.
pub fn new_run_id(now: jiff::Timestamp) -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_i128(now.as_nanosecond());
    let suffix = hasher.finish() as u16;
    format!("{}-{suffix:04x}", now.strftime("%Y%m%d-%H%M%S"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_start_with_the_time_and_differ() {
        let now: jiff::Timestamp = "2026-11-23T15:04:05Z".parse().unwrap();
        let a = new_run_id(now);
        assert!(a.starts_with("20261123-150405-"), "{a}");
        let distinct: std::collections::HashSet<_> = (0..50).map(|_| new_run_id(now)).collect();
        assert!(distinct.len() > 40, "run ids collide too often");
    }
}
