//! Deterministic crash points and a fixed clock for the crash-consistency
//! tests.
//!
//! Compiled in only with the cargo feature `test-hooks` (the test suites
//! turn it on; release builds of the binaries never have it): without it
//! [`point`] is an empty inline function and [`fixed_now`] is `None`.
//!
//! Inert unless the environment variable [`CRASH_AT_ENV`] holds a number `n`:
//! then the process aborts (no destructors, no flushing — like `SIGKILL`) at
//! the `n`-th crash point it passes. The layers place points at every step
//! that matters for durability: before and after each rename into place,
//! after a temp file is created, between body chunks, inside the DB
//! transaction. The test harness in `tests/tests/crash.rs` runs the binaries
//! with `n = 1, 2, …` until a run passes all points, and checks after each
//! crash that a re-run converges to the uninterrupted result.

use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(feature = "test-hooks")]
use std::sync::OnceLock;

use chrono::{DateTime, Utc};

/// The environment variable that arms the crash points.
pub const CRASH_AT_ENV: &str = "STATBANK_TEST_CRASH_AT";
/// The environment variable that fixes the binaries' clock (RFC 3339), so
/// that an interrupted and an uninterrupted run write the same bytes.
pub const FIXED_NOW_ENV: &str = "STATBANK_TEST_NOW";

#[cfg(feature = "test-hooks")]
static TARGET: OnceLock<Option<u64>> = OnceLock::new();
static PASSED: AtomicU64 = AtomicU64::new(0);

/// A crash point named `label` (no-op without the `test-hooks` feature).
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn point(_label: &str) {}

/// The fixed clock of the tests, if set (always `None` without the
/// `test-hooks` feature).
#[cfg(not(feature = "test-hooks"))]
pub fn fixed_now() -> Option<DateTime<Utc>> {
    None
}

/// The fixed clock of the tests, if [`FIXED_NOW_ENV`] is set.
#[cfg(feature = "test-hooks")]
pub fn fixed_now() -> Option<DateTime<Utc>> {
    std::env::var(FIXED_NOW_ENV)
        .ok()
        .and_then(|v| DateTime::parse_from_rfc3339(v.trim()).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// A crash point named `label`. Costs one atomic load when unarmed.
#[cfg(feature = "test-hooks")]
pub fn point(label: &str) {
    let target = TARGET.get_or_init(|| {
        std::env::var(CRASH_AT_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
    });
    let Some(n) = *target else {
        return;
    };
    let passed = PASSED.fetch_add(1, Ordering::SeqCst) + 1;
    if passed == n {
        eprintln!("statbank test crash point {passed}: {label}");
        std::process::abort();
    }
}

/// Crash points passed so far by this process (counted only when armed).
pub fn points_passed() -> u64 {
    PASSED.load(Ordering::SeqCst)
}
