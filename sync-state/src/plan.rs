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
    /// Skip the poll: the last one is younger than 7 days.
    Skip {
        /// When the catalog was last polled.
        last_catalog_poll_at: UtcSecond,
    },
}

/// Guide §2: poll if forced, if never polled, or if the last poll is at least
/// 7 days old.
///
/// ```
/// use chrono::{Duration, TimeZone, Utc};
/// use sync_state::{catalog_gate, GateDecision, SyncState};
/// let now = Utc.with_ymd_and_hms(2026, 11, 29, 22, 0, 0).unwrap();
/// let mut state = SyncState::default();
/// assert_eq!(catalog_gate(&state, now, false), GateDecision::Poll);
/// state.last_catalog_poll_at = Some((now - Duration::days(6)).into());
/// assert!(matches!(catalog_gate(&state, now, false), GateDecision::Skip { .. }));
/// assert_eq!(catalog_gate(&state, now, true), GateDecision::Poll);
/// ```
pub fn catalog_gate(state: &SyncState, now: DateTime<Utc>, force: bool) -> GateDecision {
    match state.last_catalog_poll_at {
        Some(last) if !force && now - last.get() < Duration::days(CATALOG_POLL_INTERVAL_DAYS) => {
            GateDecision::Skip {
                last_catalog_poll_at: last,
            }
        }
        _ => GateDecision::Poll,
    }
}

/// Whether a catalog table is synced in this cycle (guide §3).
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

/// Guide §3.
pub fn eligibility(
    entry: Option<&TableState>,
    catalog_updated: &str,
    has_local_partitions: bool,
) -> Eligibility {
    let same = entry
        .and_then(|e| e.last_seen_updated.as_deref())
        .is_some_and(|u| u == catalog_updated);
    if has_local_partitions && same {
        Eligibility::Unchanged
    } else {
        Eligibility::Sync {
            bootstrap: !has_local_partitions,
        }
    }
}

/// The periods chosen for one table (guide §5, Appendix A).
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

/// Guide §5: `new = remote − local`, `refresh = trailing window`, fetch
/// `new ∪ refresh` (all of `remote` on bootstrap). With `prune`, local periods
/// missing from `remote` are listed in `deleted`. Duplicate remote codes are
/// kept once.
pub fn select_periods(
    remote: &[Tid],
    local: &BTreeSet<Tid>,
    frequency: Frequency,
    bootstrap: bool,
    prune: bool,
) -> PeriodSelection {
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

/// Appendix A: rows per period ≈ ceil(product of every variable's value count
/// / number of periods). `value_counts` includes the time variable.
pub fn estimate_rows_per_period(value_counts: &[usize], n_periods: usize) -> u64 {
    let product = value_counts
        .iter()
        .fold(1u128, |acc, &n| acc.saturating_mul(n.max(1) as u128));
    let periods = n_periods.max(1) as u128;
    let rows = product.div_ceil(periods);
    u64::try_from(rows).unwrap_or(u64::MAX)
}

/// Appendix A: periods per request = max(1, `max_rows` // rows per period).
pub fn periods_per_request(rows_per_period: u64, max_rows: u64) -> usize {
    let n = max_rows / rows_per_period.max(1);
    usize::try_from(n.max(1)).unwrap_or(usize::MAX)
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
    fn gate_opens_after_exactly_seven_days() {
        let mut s = SyncState {
            last_catalog_poll_at: Some((now() - Duration::days(7)).into()),
            ..SyncState::default()
        };
        assert_eq!(catalog_gate(&s, now(), false), GateDecision::Poll);
        s.last_catalog_poll_at = Some((now() - Duration::days(7) + Duration::seconds(1)).into());
        assert!(matches!(
            catalog_gate(&s, now(), false),
            GateDecision::Skip { .. }
        ));
        assert_eq!(catalog_gate(&s, now(), true), GateDecision::Poll);
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
        let sel = select_periods(&remote, &local, Frequency::Other, false, true);
        assert_eq!(sel.new_periods, tids(&["2023K4", "2024K1"]));
        assert_eq!(sel.refresh_periods, tids(&["2023K4", "2024K1"]));
        assert_eq!(sel.fetch, tids(&["2023K4", "2024K1"]));
        assert_eq!(sel.deleted, tids(&["2022K4"]));
        let sel = select_periods(&remote, &local, Frequency::Yearly, false, false);
        assert_eq!(sel.fetch, tids(&["2023K2", "2023K3", "2023K4", "2024K1"]));
        assert!(sel.deleted.is_empty());
        let boot = select_periods(&remote, &BTreeSet::new(), Frequency::Quarterly, true, false);
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
            let sel = select_periods(&remote, &local, freq, boot, prune);
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

        #[test]
        fn batches_cover_fetch_in_order(remote in arb_tids(), per in 1usize..10) {
            let b = batches(&remote, per);
            prop_assert!(b.iter().all(|x| !x.is_empty() && x.len() <= per));
            let flat: Vec<Tid> = b.into_iter().flatten().collect();
            prop_assert_eq!(flat, remote);
        }
    }
}
