//! Deterministic crash points and a fixed clock for the crash-consistency
//! tests.
//!
//! Compiled in only with the cargo feature `test-hooks` (the test suites
//! turn it on; release builds of the binaries never have it): without it
//! [`point`] is an empty inline function and [`fixed_now`] is `None`.
//!
//! Inert unless the environment variable [`CRASH_AT_ENV`] is set. It holds
//! either a number `n`, and the process aborts (no destructors, no
//! flushing — like `SIGKILL`) at the `n`-th crash point it passes, or
//! `<label>#<k>`, and it aborts at the `k`-th passing of the point named
//! `<label>`. The second form names a point whatever the interleaving of
//! concurrent tables and threads, which makes the order of points vary
//! from run to run. With [`CRASH_TRACE_ENV`] set to `1` every point passed
//! is printed to stderr (`statbank test crash point passed: <label>`), so a
//! harness can list the points of an uninterrupted run.
//!
//! A test can also run code of its own at a point, on the thread that
//! passes it ([`on_point`]): to commit a concurrent write between two
//! steps of a reader, deterministically.
//!
//! The layers place points at every step that matters for durability:
//! before and after each rename into place, after a temp file is created,
//! between body chunks, inside the DB transaction. The test harness in
//! `tests/tests/crash.rs` kills the binaries at each point and checks after
//! each crash that a re-run converges to the uninterrupted result.

use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(feature = "test-hooks")]
use std::sync::OnceLock;

use chrono::{DateTime, Utc};

/// The environment variable that arms the crash points.
pub const CRASH_AT_ENV: &str = "STATBANK_TEST_CRASH_AT";
/// The environment variable that fixes the binaries' clock (RFC 3339), so
/// that an interrupted and an uninterrupted run write the same bytes.
pub const FIXED_NOW_ENV: &str = "STATBANK_TEST_NOW";

/// The environment variable that makes every crash point print its label.
pub const CRASH_TRACE_ENV: &str = "STATBANK_TEST_CRASH_TRACE";

/// Where an armed process aborts, parsed from [`CRASH_AT_ENV`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrashAt {
    /// At the `n`-th crash point passed, whatever its label.
    Nth(u64),
    /// At the `k`-th passing of the point named `label`.
    Label {
        /// The point's label, as given to [`point`].
        label: String,
        /// Which passing of it (1 = the first).
        k: u64,
    },
}

impl CrashAt {
    /// Parses `n` or `<label>#<k>`; `None` for anything else.
    pub fn parse(s: &str) -> Option<CrashAt> {
        let s = s.trim();
        if let Ok(n) = s.parse::<u64>() {
            return Some(CrashAt::Nth(n));
        }
        let (label, k) = s.rsplit_once('#')?;
        let k = k.parse::<u64>().ok().filter(|k| *k > 0)?;
        (!label.is_empty()).then(|| CrashAt::Label {
            label: label.to_string(),
            k,
        })
    }
}

impl std::fmt::Display for CrashAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CrashAt::Nth(n) => write!(f, "{n}"),
            CrashAt::Label { label, k } => write!(f, "{label}#{k}"),
        }
    }
}

#[cfg(feature = "test-hooks")]
struct Armed {
    at: Option<CrashAt>,
    trace: bool,
}

#[cfg(feature = "test-hooks")]
static ARMED: OnceLock<Armed> = OnceLock::new();
static PASSED: AtomicU64 = AtomicU64::new(0);
#[cfg(feature = "test-hooks")]
static PASSED_LABEL: AtomicU64 = AtomicU64::new(0);

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
    let armed = ARMED.get_or_init(|| Armed {
        at: std::env::var(CRASH_AT_ENV)
            .ok()
            .and_then(|v| CrashAt::parse(&v)),
        trace: std::env::var(CRASH_TRACE_ENV).is_ok_and(|v| v == "1"),
    });
    if armed.trace {
        eprintln!("statbank test crash point passed: {label}");
    }
    run_hook(label);
    let Some(at) = &armed.at else {
        return;
    };
    let passed = PASSED.fetch_add(1, Ordering::SeqCst) + 1;
    let hit = match at {
        CrashAt::Nth(n) => passed == *n,
        CrashAt::Label { label: l, k } => {
            l == label && PASSED_LABEL.fetch_add(1, Ordering::SeqCst) + 1 == *k
        }
    };
    if hit {
        eprintln!("statbank test crash point {at}: {label}");
        std::process::abort();
    }
}

#[cfg(feature = "test-hooks")]
type Hook = (String, Box<dyn FnOnce()>);

#[cfg(feature = "test-hooks")]
thread_local! {
    static HOOKS: std::cell::RefCell<Vec<Hook>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` once, the next time this thread passes the point named
/// `label` (only with the `test-hooks` feature).
#[cfg(feature = "test-hooks")]
pub fn on_point(label: &str, f: impl FnOnce() + 'static) {
    HOOKS.with(|h| h.borrow_mut().push((label.to_string(), Box::new(f))));
}

#[cfg(feature = "test-hooks")]
fn run_hook(label: &str) {
    let hook = HOOKS.with(|h| {
        let mut h = h.borrow_mut();
        let i = h.iter().position(|(l, _)| l == label)?;
        Some(h.remove(i).1)
    });
    if let Some(f) = hook {
        f();
    }
}

/// Crash points passed so far by this process (counted only when armed).
pub fn points_passed() -> u64 {
    PASSED.load(Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::CrashAt;

    #[test]
    fn crash_targets_parse_and_round_trip() {
        for (text, at) in [
            ("7", CrashAt::Nth(7)),
            (
                "swap intent written#2",
                CrashAt::Label {
                    label: "swap intent written".into(),
                    k: 2,
                },
            ),
            (
                "json renamed, before folder fsync#1",
                CrashAt::Label {
                    label: "json renamed, before folder fsync".into(),
                    k: 1,
                },
            ),
        ] {
            assert_eq!(CrashAt::parse(text), Some(at.clone()));
            assert_eq!(CrashAt::parse(&at.to_string()), Some(at));
        }
        for bad in ["", "x", "label#0", "label#", "#3", "label#-1"] {
            assert_eq!(CrashAt::parse(bad), None, "{bad:?}");
        }
    }
}
