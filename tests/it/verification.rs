//! Revisions older than the refresh window reach the mirror and Postgres:
//! rolling verification pays the debt of a changed `updated` within 4
//! weekly cycles by default, in quarterly, yearly, monthly and "other"
//! tables; unchanged old periods are neither rewritten nor re-applied;
//! `--verify-all` converges in one cycle.

use std::collections::BTreeMap;

use bins::{run_sync_cycle, SyncOptions};
use statbank_client::emulator::{EmuTable, Emulator, World};
use sync_state::{ApplyStatus, DataDir, RunManifest, RunStatus, TableId, Tid};
use tests::e2e::{create, Setup};
use tests::sync::{at_hours, fast_client, options};

fn codes(prefix: impl Fn(usize) -> String, n: usize) -> Vec<String> {
    (0..n).map(prefix).collect()
}

fn world() -> World {
    let q = codes(|i| format!("{}K{}", 2015 + i / 4, i % 4 + 1), 40);
    let y = codes(|i| format!("{}", 1990 + i), 32);
    let m = codes(|i| format!("{}M{:02}", 2020 + i / 12, i % 12 + 1), 48);
    let o = codes(|i| format!("{}/{}", 2000 + i, 2001 + i), 12);
    let mut w = World::new();
    for (id, tids) in [("QTAB", &q), ("YTAB", &y), ("MTAB", &m), ("OTAB", &o)] {
        let t: Vec<&str> = tids.iter().map(String::as_str).collect();
        w.insert(EmuTable::synthetic(id, &t, &[("OMRÅDE", 5), ("KØN", 2)]));
    }
    w
}

/// One old period of each table, far outside its refresh window.
const OLD: [(&str, &str); 4] = [
    ("QTAB", "2016K2"),
    ("YTAB", "1993"),
    ("MTAB", "2020M05"),
    ("OTAB", "2001/2002"),
];

fn id(s: &str) -> TableId {
    TableId::new(s).expect("id")
}

fn tid(s: &str) -> Tid {
    Tid::new(s).expect("tid")
}

/// A weekly cycle (`week` weeks after the start), then its apply.
fn cycle(s: &mut Setup, week: i64, tweak: impl FnOnce(&mut SyncOptions)) -> RunManifest {
    let mut o = options(s.tmp.path(), at_hours(24 * 7 * week), false);
    tweak(&mut o);
    let client = fast_client(&s.emu.base_url(), 0);
    let m = s.rt.block_on(run_sync_cycle(&client, &o)).expect("cycle");
    assert_eq!(m.status, RunStatus::Success, "{:?}", m.tables);
    let r = s.apply(&m.run_id, &create());
    assert_ne!(r.status, RunStatus::PartialFailure, "{:?}", r.tables);
    m
}

/// The sum of `table`'s values in `period`.
fn sum(s: &mut Setup, table: &str, period: &str) -> f64 {
    let date = fact_apply::tid_to_date(period)
        .map(|d| d.to_string())
        .unwrap_or_else(|_| period.to_string());
    s.pg.query_one(
        &format!(
            "SELECT coalesce(sum(indhold), 0) FROM fact.{} WHERE tid::text = $1",
            table.to_lowercase()
        ),
        &[&date],
    )
    .expect("sum")
    .get(0)
}

fn revise_old_periods(emu: &Emulator, updated: &str) {
    let h = emu.handle();
    for (t, p) in OLD {
        h.revise_period(t, p);
        h.set_updated(t, updated);
    }
}

#[test]
fn old_revisions_converge_within_four_weekly_cycles_and_reach_postgres() {
    let mut s = Setup::new(world());
    cycle(&mut s, 0, |o| o.gate.force = true);
    let before: BTreeMap<&str, f64> = OLD.iter().map(|(t, p)| (*t, sum(&mut s, t, p))).collect();
    let store = partition_store::PartitionStore::new(&s.data());
    let root = s.tmp.path().to_path_buf();
    let bytes = |t: &str, p: &str| {
        std::fs::read(root.join(format!(
            "statbank_tables/{t}/{}.parquet",
            tid(p).file_stem()
        )))
        .expect("partition")
    };
    // An unchanged old period of each table, to check it is not rewritten.
    let untouched = [
        ("QTAB", "2015K1"),
        ("YTAB", "1990"),
        ("MTAB", "2020M01"),
        ("OTAB", "2000/2001"),
    ];
    let untouched_bytes: Vec<Vec<u8>> = untouched.iter().map(|(t, p)| bytes(t, p)).collect();

    revise_old_periods(&s.emu, "2026-02-01T08:00:00");
    let mut found: BTreeMap<&str, usize> = BTreeMap::new();
    for week in 1..=4 {
        s.emu.handle().clear_requests();
        let m = cycle(&mut s, week, |_| {});
        // Visits only to pay debt (`updated` unchanged, weeks 2–4) use the
        // cached tableinfo: no tableinfo request, only the BULK slices.
        let infos = s
            .emu
            .handle()
            .requests()
            .iter()
            .filter(|r| r.endpoint == Some(statbank_client::emulator::Endpoint::TableInfo))
            .count();
        if week == 1 {
            assert_eq!(
                infos, 8,
                "the updated tables' tableinfo is fetched, in Danish and English"
            );
        } else {
            assert_eq!(
                infos, 0,
                "week {week}: tableinfo requested on a debt-only visit"
            );
        }
        for (t, p) in OLD {
            let r = &m.tables[&id(t)];
            if r.changed_tids.contains(&tid(p)) {
                found.insert(t, week as usize);
                assert!(
                    r.verified_periods
                        .as_ref()
                        .is_some_and(|v| v.contains(&tid(p))),
                    "{t}: found by verification"
                );
                assert!(!r
                    .refresh_periods
                    .as_ref()
                    .is_some_and(|v| v.contains(&tid(p))));
                assert!(!r.new_periods.as_ref().is_some_and(|v| v.contains(&tid(p))));
            }
            // Periods re-applied are exactly the changed ones.
            let applied = m
                .db_apply
                .as_ref()
                .and_then(|a| a.tables.as_ref())
                .and_then(|ts| ts.iter().find(|x| x.table == id(t)).cloned());
            let reloaded = RunManifest::load(&s.data(), &m.run_id).expect("m");
            let applied = reloaded
                .db_apply
                .as_ref()
                .and_then(|a| a.tables.as_ref())
                .and_then(|ts| ts.iter().find(|x| x.table == id(t)).cloned())
                .or(applied);
            if let Some(a) = applied {
                assert_eq!(a.status, ApplyStatus::Applied);
                assert_eq!(
                    a.changed_tids, r.changed_tids,
                    "{t}: only changed periods applied"
                );
            }
        }
        if week == 4 {
            assert_eq!(
                m.summary.verification_debt, 0,
                "the debt clears within 4 cycles"
            );
        }
    }
    assert_eq!(found.len(), 4, "every old revision was found: {found:?}");
    for (t, p) in OLD {
        let now = sum(&mut s, t, p);
        assert_ne!(now, before[t], "{t} {p} reached Postgres");
    }
    for ((t, p), b) in untouched.iter().zip(&untouched_bytes) {
        assert_eq!(
            &bytes(t, p),
            b,
            "{t} {p}: verified unchanged, not rewritten"
        );
    }
    // The fact tables equal the source now: a fresh bootstrap of the same
    // world gives the same partitions.
    let fresh = tempfile::tempdir().expect("tmp");
    let client = fast_client(&s.emu.base_url(), 0);
    s.rt.block_on(run_sync_cycle(
        &client,
        &options(fresh.path(), at_hours(0), true),
    ))
    .expect("fresh");
    assert_eq!(
        tests::sync::snapshot(s.tmp.path())
            .iter()
            .filter(|(k, _)| OLD.iter().any(|(t, _)| k.starts_with(t)))
            .map(|(k, _)| k.clone())
            .collect::<Vec<_>>(),
        tests::sync::snapshot(fresh.path())
            .iter()
            .filter(|(k, _)| OLD.iter().any(|(t, _)| k.starts_with(t)))
            .map(|(k, _)| k.clone())
            .collect::<Vec<_>>()
    );
    for (t, p) in OLD {
        let a = store.footer(&id(t), &tid(p)).expect("footer").digest;
        let b = partition_store::PartitionStore::new(&DataDir::local(fresh.path()))
            .footer(&id(t), &tid(p))
            .expect("footer")
            .digest;
        assert_eq!(a, b, "{t} {p}: the mirror holds the source's content");
    }
}

#[test]
fn verify_all_converges_in_one_cycle_and_zero_turns_it_off() {
    let mut s = Setup::new(world());
    cycle(&mut s, 0, |o| o.gate.force = true);
    // Verification off: the original's window-only behaviour never sees
    // the old revisions.
    revise_old_periods(&s.emu, "2026-02-01T08:00:00");
    for week in 1..=3 {
        let m = cycle(&mut s, week, |o| o.verify.cycles = 0);
        for (t, p) in OLD {
            assert!(!m.tables[&id(t)].changed_tids.contains(&tid(p)));
        }
    }
    // On demand, all of it now.
    let m = cycle(&mut s, 4, |o| {
        o.verify_all = true;
        o.gate.force = true;
    });
    for (t, p) in OLD {
        assert!(
            m.tables[&id(t)].changed_tids.contains(&tid(p)),
            "{t}: found by --verify-all"
        );
    }
    assert_eq!(m.summary.verification_debt, 0);
}
