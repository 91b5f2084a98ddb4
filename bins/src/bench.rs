//! What the benchmark binaries (`bench-sync`, `bench-apply`) share: peak RSS
//! of this process and of a child timed by `/usr/bin/time`, and medians.

/// The `/usr/bin/time -f` format whose output [`time_maxrss_kib`] reads.
pub const TIME_FORMAT: &str = "MAXRSS %M";

/// Peak resident set size of this process in KiB (`VmHWM`).
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The child's peak RSS in KiB from `/usr/bin/time -f "MAXRSS %M"` output.
pub fn time_maxrss_kib(stderr: &str) -> Option<u64> {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("MAXRSS "))
        .and_then(|v| v.trim().parse().ok())
}

/// The median (mean of the middle two for an even count; NaN when empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_time_output() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
        assert_eq!(time_maxrss_kib("noise\nMAXRSS 1234\n"), Some(1234));
        assert_eq!(time_maxrss_kib("nothing"), None);
    }
}
