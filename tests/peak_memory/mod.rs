//! The test process's peak memory, for the bounded-read tests to print (never
//! to assert: a figure, not a rule).

/// The process's peak resident set size, in MiB (Linux's VmHWM; 0 elsewhere).
pub fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    kib / 1024
}
