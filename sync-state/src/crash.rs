//! Deterministic crash points for the crash-consistency tests.
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
use std::sync::OnceLock;

/// The environment variable that arms the crash points.
pub const CRASH_AT_ENV: &str = "STATBANK_TEST_CRASH_AT";

static TARGET: OnceLock<Option<u64>> = OnceLock::new();
static PASSED: AtomicU64 = AtomicU64::new(0);

/// A crash point named `label`. Costs one atomic load when unarmed.
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
