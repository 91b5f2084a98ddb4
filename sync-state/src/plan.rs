//! Pure decisions of a sync cycle: the weekly catalog gate, per-table
//! eligibility, period selection and batch sizing. Every function takes
//! `now` (where time matters) as a parameter and never reads the clock.

use std::collections::{BTreeSet, HashSet};

use chrono::{DateTime, Duration, Utc};

use crate::{Frequency, SyncState, TableState, Tid, UtcSecond};

/// How long the catalog poll is skipped after a poll.
pub const CATALOG_POLL_INTERVAL_DAYS: i64 = 7;

/// Largest number of rows one BULK request should return
/// (`MAX_ROWS_PER_CALL` of the original).
pub const MAX_ROWS_PER_CALL: u64 = 50_000_000;

/// The weekly gate's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateDecision {
    /// Poll the catalog.
    Poll,
    /// Poll the catalog: the last poll is recorded in the future (clock
    /// skew, a hand edit), which would keep the gate closed for good.
    PollClockSkew {
        /// The recorded poll time, later than now.
        last_catalog_poll_at: UtcSecond,
    },
    /// Skip the poll: the last one is too recent.
    Skip {
        /// When the catalog was last polled.
        last_catalog_poll_at: UtcSecond,
    },
}

/// How often the catalog is polled.
///
/// A weekly schedule never fires exactly seven days after the previous
/// poll: the poll time is recorded when the catalog answered, a scheduler
/// starts a few seconds early or late, a pod waits for a node. A strict
/// "at least 7 days" rule would then skip a scheduled run and leave the
/// mirror two weeks stale. So the gate opens once `interval − grace` has
/// passed: any run scheduled a week after the last one polls, while a
/// manual run in the middle of the week still does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatePolicy {
    /// The nominal interval between polls (7 days).
    pub interval: Duration,
    /// How much earlier than `interval` a run may come and still poll
    /// (12 hours).
    pub grace: Duration,
    /// Poll whatever the last poll time (`--force-catalog-poll`).
    pub force: bool,
}

impl Default for GatePolicy {
    fn default() -> Self {
        GatePolicy {
            interval: Duration::days(CATALOG_POLL_INTERVAL_DAYS),
            grace: Duration::hours(12),
            force: false,
        }
    }
}

impl GatePolicy {
    /// The default policy, forced open.
    pub fn forced() -> GatePolicy {
        GatePolicy {
            force: true,
            ..GatePolicy::default()
        }
    }
}

/// The weekly gate (`docs/sync.md`, "Weekly catalog gate") with a grace
/// period ([`GatePolicy`]): poll if forced, if never polled, if the last
/// poll is at least `interval − grace` old, or if it is in the future
/// ([`GateDecision::PollClockSkew`]: a gate closed until then would be
/// closed for as long as the clock is wrong).
///
/// ```
/// use chrono::{Duration, TimeZone, Utc};
/// use sync_state::{catalog_gate, GateDecision, GatePolicy, SyncState};
/// let now = Utc.with_ymd_and_hms(2026, 11, 29, 22, 0, 0).unwrap();
/// let policy = GatePolicy::default();
/// let mut state = SyncState::default();
/// assert_eq!(catalog_gate(&state, now, &policy), GateDecision::Poll);
/// state.last_catalog_poll_at = Some((now - Duration::days(3)).into());
/// assert!(matches!(catalog_gate(&state, now, &policy), GateDecision::Skip { .. }));
/// assert_eq!(catalog_gate(&state, now, &GatePolicy::forced()), GateDecision::Poll);
/// // a weekly run that comes a little early still polls
/// state.last_catalog_poll_at = Some((now - Duration::days(7) + Duration::seconds(3)).into());
/// assert_eq!(catalog_gate(&state, now, &policy), GateDecision::Poll);
/// // a poll recorded in the future is due
/// state.last_catalog_poll_at = Some((now + Duration::days(30)).into());
/// assert!(matches!(catalog_gate(&state, now, &policy), GateDecision::PollClockSkew { .. }));
/// ```
pub fn catalog_gate(state: &SyncState, now: DateTime<Utc>, policy: &GatePolicy) -> GateDecision {
    match state.last_catalog_poll_at {
        _ if policy.force => GateDecision::Poll,
        Some(last) if last.get() > now => GateDecision::PollClockSkew {
            last_catalog_poll_at: last,
        },
        Some(last) if now - last.get() < policy.interval - policy.grace => GateDecision::Skip {
            last_catalog_poll_at: last,
        },
        _ => GateDecision::Poll,
    }
}

/// Whether a catalog table is synced in this cycle (`docs/sync.md`, "Eligibility").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eligibility {
    /// Local partitions exist and `last_seen_updated` equals the catalog's
    /// `updated`: skip (`unchanged_updated`).
    Unchanged,
    /// Sync the table; `bootstrap` when it has no local partitions.
    Sync {
        /// No partition files exist yet: fetch every period.
        bootstrap: bool,
    },
}

/// `docs/sync.md`, "Eligibility", plus: a table that still owes verifications
/// ([`TableState::verify_debt`]) is synced even when its `updated` did not
/// change, so that its debt is paid within the policy's cycles.
pub fn eligibility(
    entry: Option<&TableState>,
    catalog_updated: &str,
    has_local_partitions: bool,
) -> Eligibility {
    let same = entry
        .and_then(|e| e.last_seen_updated.as_deref())
        .is_some_and(|u| u == catalog_updated);
    let owes = entry.is_some_and(|e| !e.verify_debt.is_empty());
    if has_local_partitions && same && !owes {
        Eligibility::Unchanged
    } else {
        Eligibility::Sync {
            bootstrap: !has_local_partitions,
        }
    }
}

/// The periods chosen for one table (`docs/sync.md`, "Period selection").
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeriodSelection {
    /// Remote periods with no local partition, in remote order (all remote
    /// periods on bootstrap).
    pub new_periods: Vec<Tid>,
    /// The trailing refresh window of the remote list.
    pub refresh_periods: Vec<Tid>,
    /// What to fetch: new ∪ refresh in remote order (all remote periods on
    /// bootstrap).
    pub fetch: Vec<Tid>,
    /// Local periods gone from the remote list (filled only when pruning).
    pub deleted: Vec<Tid>,
}

/// The trailing `window` periods of `remote` (in remote order).
pub fn refresh_window(remote: &[Tid], window: usize) -> Vec<Tid> {
    remote[remote.len().saturating_sub(window)..].to_vec()
}

/// How [`select_periods`] chooses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SelectOptions {
    /// No local partitions: fetch every remote period.
    pub bootstrap: bool,
    /// List local periods gone from the remote list in `deleted`.
    pub prune: bool,
}

/// `docs/sync.md`, "Period selection": `new = remote − local`, `refresh = trailing window`, fetch
/// `new ∪ refresh` (all of `remote` on bootstrap). With `prune`, local periods
/// missing from `remote` are listed in `deleted`. Duplicate remote codes are
/// kept once.
pub fn select_periods(
    remote: &[Tid],
    local: &BTreeSet<Tid>,
    frequency: Frequency,
    opts: SelectOptions,
) -> PeriodSelection {
    let SelectOptions { bootstrap, prune } = opts;
    let mut seen = HashSet::with_capacity(remote.len());
    let remote: Vec<Tid> = remote
        .iter()
        .filter(|t| seen.insert(t.as_str()))
        .cloned()
        .collect();
    let refresh_periods = refresh_window(&remote, frequency.refresh_window());
    let deleted = if prune {
        let remote_set: HashSet<&Tid> = remote.iter().collect();
        local
            .iter()
            .filter(|t| !remote_set.contains(t))
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    if bootstrap {
        return PeriodSelection {
            new_periods: remote.clone(),
            refresh_periods,
            fetch: remote,
            deleted,
        };
    }
    let new_periods: Vec<Tid> = remote
        .iter()
        .filter(|t| !local.contains(*t))
        .cloned()
        .collect();
    let refresh_set: HashSet<&Tid> = refresh_periods.iter().collect();
    let fetch = remote
        .iter()
        .filter(|t| !local.contains(*t) || refresh_set.contains(t))
        .cloned()
        .collect();
    PeriodSelection {
        new_periods,
        refresh_periods,
        fetch,
        deleted,
    }
}

/// `docs/sync.md`, "Batching": rows per period ≈ ceil(product of every variable's value count
/// / number of periods). `value_counts` includes the time variable.
pub fn estimate_rows_per_period(value_counts: &[usize], n_periods: usize) -> u64 {
    let product = value_counts
        .iter()
        .fold(1u128, |acc, &n| acc.saturating_mul(n.max(1) as u128));
    let periods = n_periods.max(1) as u128;
    let rows = product.div_ceil(periods);
    u64::try_from(rows).unwrap_or(u64::MAX)
}

/// `docs/sync.md`, "Batching": periods per request = max(1, `max_rows` // rows per period).
pub fn periods_per_request(rows_per_period: u64, max_rows: u64) -> usize {
    let n = max_rows / rows_per_period.max(1);
    usize::try_from(n.max(1)).unwrap_or(usize::MAX)
}

/// How rolling verification of periods older than the refresh window is
/// paid (see [`plan_verification`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyPolicy {
    /// Cycles over which a table's debt is spread (default 4): each cycle
    /// verifies `ceil(debt / cycles)` periods, so the debt clears within
    /// `cycles` cycles. `0` turns rolling verification off (the original's
    /// behaviour: only the refresh window is ever re-fetched).
    pub cycles: u32,
    /// At most this many periods per table and cycle (clearing may then take
    /// longer than `cycles`).
    pub max_periods: Option<usize>,
    /// At most this many (estimated) rows per table and cycle.
    pub max_rows: Option<u64>,
}

impl Default for VerifyPolicy {
    fn default() -> Self {
        VerifyPolicy {
            cycles: 4,
            max_periods: None,
            max_rows: None,
        }
    }
}

/// What to verify in this cycle and what is owed afterwards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyPlan {
    /// Periods to fetch this cycle only to verify them (not in the
    /// selection's `fetch`), in remote order.
    pub verify: Vec<Tid>,
    /// The debt left once `verify` has been fetched, in the order it will
    /// be paid (longest-owed first).
    pub debt_after: Vec<Tid>,
    /// Periods verified per cycle from now on.
    pub per_cycle: Option<usize>,
}

/// The inputs of [`plan_verification`] besides the selection.
#[derive(Debug, Clone, Copy)]
pub struct VerifyInputs<'a> {
    /// The debt carried from earlier cycles.
    pub debt: &'a [Tid],
    /// The per-cycle amount fixed when that debt was incurred.
    pub per_cycle: Option<usize>,
    /// The catalog `updated` changed since the last sync: every period
    /// outside what is fetched anyway now owes a verification.
    pub updated_changed: bool,
    /// Verify every period now (`--verify-all`).
    pub verify_all: bool,
    /// Estimated rows per period (for `max_rows`).
    pub rows_per_period: u64,
}

/// Rolling verification: when a table's `updated` changes, every remote
/// period that the cycle does not fetch anyway (everything outside new ∪
/// refresh) owes one verification against the source; the debt is paid a
/// slice per cycle, most recent periods first. A new `updated` while debt is
/// still owed puts the periods already owed first (they have waited
/// longest), so the oldest periods are reached even when a table changes
/// every week. Periods fetched anyway, or gone from the remote list, leave
/// the debt. Bootstraps fetch everything and owe nothing.
///
/// ```
/// use std::collections::BTreeSet;
/// use sync_state::{plan_verification, select_periods, Frequency, SelectOptions, Tid, VerifyInputs, VerifyPolicy};
/// let remote: Vec<Tid> = (2000..2024).map(|y| Tid::new(y.to_string()).unwrap()).collect();
/// let local: BTreeSet<Tid> = remote.iter().cloned().collect();
/// let sel = select_periods(&remote, &local, Frequency::Yearly, SelectOptions::default());
/// let inputs = VerifyInputs { debt: &[], per_cycle: None, updated_changed: true,
///                             verify_all: false, rows_per_period: 100 };
/// let plan = plan_verification(&remote, &sel, inputs, &VerifyPolicy::default());
/// assert_eq!(plan.verify.len(), 5);          // 20 old periods over 4 cycles
/// assert_eq!(plan.debt_after.len(), 15);
/// ```
pub fn plan_verification(
    remote: &[Tid],
    sel: &PeriodSelection,
    inputs: VerifyInputs<'_>,
    policy: &VerifyPolicy,
) -> VerifyPlan {
    let fetched: HashSet<&Tid> = sel.fetch.iter().collect();
    let outside: Vec<&Tid> = remote.iter().filter(|t| !fetched.contains(t)).collect();
    if inputs.verify_all {
        return VerifyPlan {
            verify: outside.into_iter().cloned().collect(),
            debt_after: Vec::new(),
            per_cycle: None,
        };
    }
    if policy.cycles == 0 {
        return VerifyPlan::default();
    }
    let debt = owed_queue(&outside, inputs);
    if debt.is_empty() {
        return VerifyPlan::default();
    }
    let spread = debt.len().div_ceil(policy.cycles as usize);
    let mut per_cycle = match (inputs.updated_changed, inputs.per_cycle) {
        (false, Some(n)) => n.max(1),
        _ => spread.max(1),
    };
    if let Some(m) = policy.max_periods {
        per_cycle = per_cycle.min(m.max(1));
    }
    if let Some(rows) = policy.max_rows {
        let by_rows = usize::try_from(rows / inputs.rows_per_period.max(1)).unwrap_or(usize::MAX);
        per_cycle = per_cycle.min(by_rows.max(1));
    }
    let (now, later) = debt.split_at(per_cycle.min(debt.len()));
    let paid: HashSet<&Tid> = now.iter().copied().collect();
    // Fetched in remote order; what is left stays in the order it is paid.
    let verify = remote
        .iter()
        .filter(|t| paid.contains(t))
        .cloned()
        .collect();
    let debt_after: Vec<Tid> = later.iter().map(|t| (*t).clone()).collect();
    VerifyPlan {
        per_cycle: (!debt_after.is_empty()).then_some(per_cycle),
        verify,
        debt_after,
    }
}

/// The debt as a queue, in the order it is paid: what was already owed
/// first (in its order, so the longest-waiting periods are paid first and a
/// table updated every week still reaches its oldest periods), then, when
/// `updated` changed, the newly owed periods, most recent first. Only
/// periods outside this cycle's fetch and still on the remote list count.
fn owed_queue<'a>(outside: &[&'a Tid], inputs: VerifyInputs<'a>) -> Vec<&'a Tid> {
    let outside_set: HashSet<&Tid> = outside.iter().copied().collect();
    let mut seen: HashSet<&Tid> = HashSet::new();
    let mut queue: Vec<&Tid> = inputs
        .debt
        .iter()
        .filter(|t| outside_set.contains(t) && seen.insert(t))
        .collect();
    if inputs.updated_changed {
        queue.extend(outside.iter().rev().copied().filter(|t| seen.insert(t)));
    }
    queue
}

/// Splits the periods to fetch into request batches of at most `per_request`.
pub fn batches(fetch: &[Tid], per_request: usize) -> Vec<Vec<Tid>> {
    fetch
        .chunks(per_request.max(1))
        .map(<[Tid]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn tids(codes: &[&str]) -> Vec<Tid> {
        codes.iter().map(|c| Tid::new(*c).expect("tid")).collect()
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 29, 22, 0, 0)
            .single()
            .expect("valid")
    }

    #[test]
    fn gate_opens_for_a_weekly_run_whatever_its_jitter() {
        let p = GatePolicy::default();
        let mut s = SyncState {
            last_catalog_poll_at: Some((now() - Duration::days(7)).into()),
            ..SyncState::default()
        };
        assert_eq!(catalog_gate(&s, now(), &p), GateDecision::Poll);
        // 7 days minus 3 seconds (scheduler jitter, a slow catalog answer)
        s.last_catalog_poll_at = Some((now() - Duration::days(7) + Duration::seconds(3)).into());
        assert_eq!(catalog_gate(&s, now(), &p), GateDecision::Poll);
        // a run 6 days 12 hours after the poll: the edge of the grace
        s.last_catalog_poll_at = Some((now() - Duration::days(7) + Duration::hours(12)).into());
        assert_eq!(catalog_gate(&s, now(), &p), GateDecision::Poll);
        // a manual run mid-week stays gated
        s.last_catalog_poll_at =
            Some((now() - Duration::days(7) + Duration::hours(12) + Duration::seconds(1)).into());
        assert!(matches!(
            catalog_gate(&s, now(), &p),
            GateDecision::Skip { .. }
        ));
        assert_eq!(
            catalog_gate(&s, now(), &GatePolicy { force: true, ..p }),
            GateDecision::Poll
        );
    }

    #[test]
    fn eligibility_rules() {
        let entry = TableState {
            last_seen_updated: Some("u1".into()),
            ..TableState::default()
        };
        assert_eq!(
            eligibility(Some(&entry), "u1", true),
            Eligibility::Unchanged
        );
        assert_eq!(
            eligibility(Some(&entry), "u2", true),
            Eligibility::Sync { bootstrap: false }
        );
        // state says unchanged but the partitions are gone: bootstrap again
        assert_eq!(
            eligibility(Some(&entry), "u1", false),
            Eligibility::Sync { bootstrap: true }
        );
        assert_eq!(
            eligibility(None, "u1", true),
            Eligibility::Sync { bootstrap: false }
        );
    }

    #[test]
    fn incremental_selection() {
        let remote = tids(&["2023K1", "2023K2", "2023K3", "2023K4", "2024K1"]);
        let local: BTreeSet<Tid> = tids(&["2023K1", "2023K2", "2023K3", "2022K4"])
            .into_iter()
            .collect();
        let prune = SelectOptions {
            bootstrap: false,
            prune: true,
        };
        let sel = select_periods(&remote, &local, Frequency::Other, prune);
        assert_eq!(sel.new_periods, tids(&["2023K4", "2024K1"]));
        assert_eq!(sel.refresh_periods, tids(&["2023K4", "2024K1"]));
        assert_eq!(sel.fetch, tids(&["2023K4", "2024K1"]));
        assert_eq!(sel.deleted, tids(&["2022K4"]));
        let sel = select_periods(&remote, &local, Frequency::Yearly, SelectOptions::default());
        assert_eq!(sel.fetch, tids(&["2023K2", "2023K3", "2023K4", "2024K1"]));
        assert!(sel.deleted.is_empty());
        let boot = SelectOptions {
            bootstrap: true,
            prune: false,
        };
        let boot = select_periods(&remote, &BTreeSet::new(), Frequency::Quarterly, boot);
        assert_eq!(boot.fetch, remote);
        assert_eq!(boot.new_periods, remote);
        assert_eq!(boot.refresh_periods, remote);
    }

    #[test]
    fn batch_sizing_follows_appendix_a() {
        // FOLK1A: 105 × 3 × 127 × 5 × 70 periods
        let rows = estimate_rows_per_period(&[105, 3, 127, 5, 70], 70);
        assert_eq!(rows, 200_025);
        assert_eq!(periods_per_request(rows, MAX_ROWS_PER_CALL), 249);
        assert_eq!(periods_per_request(u64::MAX, MAX_ROWS_PER_CALL), 1);
        assert_eq!(estimate_rows_per_period(&[7, 3], 2), 11);
        let b = batches(&tids(&["1", "2", "3", "4", "5"]), 2);
        assert_eq!(b.len(), 3);
        assert_eq!(b[2], tids(&["5"]));
    }

    fn arb_tids() -> impl Strategy<Value = Vec<Tid>> {
        proptest::collection::vec(1990u32..2030, 0..40).prop_map(|ys| {
            let mut ys = ys;
            ys.sort_unstable();
            ys.dedup();
            ys.iter()
                .map(|y| Tid::new(y.to_string()).expect("tid"))
                .collect()
        })
    }

    proptest! {
        #[test]
        fn selection_invariants(remote in arb_tids(), local in arb_tids(), f in 0usize..7, boot: bool, prune: bool) {
            let freq = Frequency::ALL[f];
            let local: BTreeSet<Tid> = local.into_iter().collect();
            let sel = select_periods(&remote, &local, freq, SelectOptions { bootstrap: boot, prune });
            let remote_set: BTreeSet<&Tid> = remote.iter().collect();
            // fetch is a subsequence of remote, in remote order
            let mut it = remote.iter();
            for t in &sel.fetch {
                prop_assert!(it.any(|r| r == t));
            }
            // every new period is fetched; refresh is the tail of remote
            for t in &sel.new_periods {
                prop_assert!(sel.fetch.contains(t));
            }
            let w = freq.refresh_window().min(remote.len());
            prop_assert_eq!(&sel.refresh_periods[..], &remote[remote.len() - w..]);
            for t in &sel.refresh_periods {
                prop_assert!(sel.fetch.contains(t));
            }
            if boot {
                prop_assert_eq!(&sel.fetch, &remote);
            } else {
                for t in &sel.new_periods {
                    prop_assert!(!local.contains(t));
                }
                for t in &sel.fetch {
                    prop_assert!(!local.contains(t) || sel.refresh_periods.contains(t));
                }
            }
            for t in &sel.deleted {
                prop_assert!(prune && local.contains(t) && !remote_set.contains(t));
            }
            if prune {
                prop_assert_eq!(sel.deleted.len(), local.iter().filter(|t| !remote_set.contains(t)).count());
            }
        }

        /// The debt incurred by a changed `updated` is paid within the
        /// policy's cycles, never verifies what is fetched anyway, and
        /// drops periods gone from the remote list.
        #[test]
        fn verification_debt_clears_within_the_policy(
            remote in arb_tids(),
            f in 0usize..7,
            cycles in 1u32..6,
            gone in proptest::collection::vec(any::<proptest::sample::Index>(), 0..3),
        ) {
            let freq = Frequency::ALL[f];
            let local: BTreeSet<Tid> = remote.iter().cloned().collect();
            let policy = VerifyPolicy { cycles, ..VerifyPolicy::default() };
            let sel = select_periods(&remote, &local, freq, SelectOptions::default());
            let first = plan_verification(&remote, &sel, VerifyInputs {
                debt: &[], per_cycle: None, updated_changed: true, verify_all: false, rows_per_period: 1,
            }, &policy);
            let window: BTreeSet<&Tid> = sel.fetch.iter().collect();
            let owed_total = remote.iter().filter(|t| !window.contains(t)).count();
            prop_assert_eq!(first.verify.len() + first.debt_after.len(), owed_total);
            for t in &first.verify {
                prop_assert!(!window.contains(t));
            }
            // Later cycles: `updated` unchanged, some periods vanish.
            let mut remote2 = remote.clone();
            for g in &gone {
                if !remote2.is_empty() {
                    let i = g.index(remote2.len());
                    remote2.remove(i);
                }
            }
            let mut debt = first.debt_after.clone();
            let mut per = first.per_cycle;
            let mut cycles_used = 1;
            while !debt.is_empty() {
                let sel2 = select_periods(&remote2, &local, freq, SelectOptions::default());
                let p = plan_verification(&remote2, &sel2, VerifyInputs {
                    debt: &debt, per_cycle: per, updated_changed: false, verify_all: false, rows_per_period: 1,
                }, &policy);
                for t in &p.verify {
                    prop_assert!(remote2.contains(t) && debt.contains(t));
                }
                debt = p.debt_after;
                per = p.per_cycle;
                cycles_used += 1;
                prop_assert!(cycles_used <= cycles as usize + 1, "not cleared in {} cycles", cycles);
            }
            prop_assert!(cycles_used <= cycles.max(1) as usize);
        }

        /// A table whose `updated` changes every cycle still verifies every
        /// old period within twice the policy's cycles: what is already
        /// owed is paid before what a new `updated` adds.
        #[test]
        fn a_table_updated_every_cycle_reaches_its_oldest_periods(
            remote in arb_tids(),
            f in 0usize..7,
            cycles in 1u32..6,
        ) {
            let freq = Frequency::ALL[f];
            let local: BTreeSet<Tid> = remote.iter().cloned().collect();
            let policy = VerifyPolicy { cycles, ..VerifyPolicy::default() };
            let sel = select_periods(&remote, &local, freq, SelectOptions::default());
            let window: BTreeSet<&Tid> = sel.fetch.iter().collect();
            let old: BTreeSet<&Tid> = remote.iter().filter(|t| !window.contains(t)).collect();
            let mut last_verified: std::collections::BTreeMap<&Tid, usize> = Default::default();
            let (mut debt, mut per) = (Vec::new(), None);
            let horizon = 4 * cycles as usize + 4;
            for cycle in 1..=horizon {
                let p = plan_verification(&remote, &sel, VerifyInputs {
                    debt: &debt, per_cycle: per, updated_changed: true, verify_all: false, rows_per_period: 1,
                }, &policy);
                for t in &p.verify {
                    let t = remote.iter().find(|r| *r == t).expect("remote");
                    last_verified.insert(t, cycle);
                }
                debt = p.debt_after;
                per = p.per_cycle;
                // Every old period owed since cycle 1 was verified within
                // 2 × cycles of the last time it was (or of cycle 1).
                if cycle >= 2 * cycles as usize {
                    for t in &old {
                        let since = last_verified.get(t).copied().unwrap_or(0);
                        prop_assert!(cycle - since <= 2 * cycles as usize,
                            "{} waited {} cycles", t, cycle - since);
                    }
                }
            }
        }

        #[test]
        fn batches_cover_fetch_in_order(remote in arb_tids(), per in 1usize..10) {
            let b = batches(&remote, per);
            prop_assert!(b.iter().all(|x| !x.is_empty() && x.len() <= per));
            let flat: Vec<Tid> = b.into_iter().flatten().collect();
            prop_assert_eq!(flat, remote);
        }
    }
}
