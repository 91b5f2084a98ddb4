//! `bench-verify`: what rolling verification costs and how fast it
//! converges, over a year of weekly cycles on the real 2,339-table catalog.
//!
//! ```text
//! cargo run --release -p bins --features bench --bin bench-verify -- \
//!     [--seed 1] [--cycles 52] [--warmup 8] [--scenario both] \
//!     [--cells-per-period 2000] [--bytes-per-row 30] \
//!     [--verify-cycles 4] [--verify-max-periods 20,100] [--verify-max-rows N] \
//!     [--rate-weeks 13] [--uniform-rate] [--cadence random|regular] \
//!     [--no-new-periods] [--trace FOLK1A,DNIFHVEM]
//! ```
//!
//! A deterministic simulation, no network and no files: every decision is
//! made by the planner the sync cycle uses (`sync_state::{eligibility,
//! infer_frequency, select_periods, plan_verification,
//! estimate_rows_per_period, periods_per_request, batches}`), called the way
//! `bins/src/cycle/table.rs` calls them, and each table's `TableState`
//! (`last_seen_updated`, `verify_debt`, `verify_per_cycle`) evolves as
//! `save_synced` writes it. Per cycle and table:
//!
//! - `eligibility(entry, catalog updated, has partitions = true)`; with
//!   verification off the carried debt is cleared first (as `process_table`
//!   does); an unchanged table costs nothing;
//! - a synced table costs one tableinfo request (none on a visit only to
//!   pay debt: the cached tableinfo is used), then
//!   `select_periods` (new ∪ refresh window) and `plan_verification`; a visit
//!   only to pay debt (`updated` unchanged) fetches the slice alone, any
//!   other visit fetches window ∪ slice in remote order (as `incremental`);
//! - BULK requests = `batches(fetch, periods_per_request(rows per period,
//!   MAX_ROWS_PER_CALL)).len()` (`MAX_ROWS_PER_CALL` = 50,000,000, the
//!   default of `SyncOptions::max_rows_per_call`); bytes = periods fetched ×
//!   rows per period × `--bytes-per-row`;
//! - every cycle also costs the catalog request (same for every policy).
//!
//! Both policies see the same seeded update schedule: (a) window only
//! (`VerifyPolicy { cycles: 0 }`, `--verify-cycles 0`) and (b) rolling
//! verification (`--verify-cycles`, default 4), plus one variant per
//! `--verify-max-periods` value and `--verify-max-rows`.
//!
//! Scenarios: `normal` — each table's catalog `updated` changes in a cycle
//! with its frequency class's observed weekly probability; `revision` — the
//! same schedule, but every table is updated in the first counted cycle (a
//! benchmark revision: the worst case for cost and convergence).
//!
//! **Convergence.** An update of a table in cycle `c` has converged in cycle
//! `d ≥ c` when the table's `verify_debt` is empty after `d`'s sync; it took
//! `d − c + 1` cycles (1 = nothing owed). A later update before `d` does not
//! restart the clock of the earlier one (that is exactly when old periods
//! stay unverified longest). Updates still open at the end of the year are
//! reported as "≥ n" when they are the worst case, and count against "≤ N
//! cycles" only once they are open longer than N cycles.
//!
//! **Waits.** Per period: from the first update after its last fetch
//! (cycle 1) to its next fetch (window, verification slice or new). This
//! shows which periods stay unverified, also for the window-only policy
//! (where periods outside the window wait for ever: "≥ n").
//!
//! # Assumptions (also printed)
//!
//! - **Catalog and periods**: `World::full_catalog()` (the emulator's copy of
//!   `statbank-client/testdata/tables_catalog_da_2024-11-27.csv`): periods
//!   are enumerated from `firstPeriod` to `latestPeriod` — years, quarters,
//!   months, half-years, ISO weeks, business days (Mon–Fri) for daily codes,
//!   seasons `2020/2021`, text around one year (`AUG - DEC 2019`). Intervals
//!   `a:b` (e.g. `2007:2009`…`2020:2022`; 42 tables, 39 of them with
//!   first ≠ latest) cannot be enumerated (the emulator keeps just
//!   `[first, latest]`); here they are estimated as one period per end year
//!   (rolling annual intervals), which overestimates the few historical
//!   tables with decade steps (HISB7, HISB9, LIGEHI1). A table whose first
//!   and latest period are equal has one period.
//! - **Rows per period**: no tableinfo offline, so a fixed
//!   `--cells-per-period` (default 2,000) for every table;
//!   `estimate_rows_per_period` is fed `[cells, periods]` so it returns
//!   `cells`. Bytes and extra bytes scale linearly with it; requests change
//!   only once one fetch exceeds 50 M rows (with 2,000 cells: 25,000
//!   periods, so every fetch here is one BULK request). Real tables differ
//!   by orders of magnitude (FOLK1A has 200,025 cells per quarter, the
//!   daily exchange rates a few hundred), so read the bytes per frequency
//!   class (printed) rather than as a forecast.
//! - **Bytes per row**: `--bytes-per-row` (default 30): a BULK row with
//!   codes, e.g. FOLK1A `000;1;IALT;TOT;2024K1;2963691\r\n` is 31 bytes;
//!   tableinfo answers (a few KiB) are counted as requests, not bytes.
//! - **Update rate**: from the catalog's `updated` values, for each frequency
//!   class (as `infer_frequency` names it): the weekly probability `p` of a
//!   geometric model fitted to the age in whole weeks of each table's last
//!   update before the end of 2024-11-27, censored at `--rate-weeks` (13):
//!   `p = U / (U + Σ weeks without an update)`, U = tables updated within
//!   the window. Only a table's last update is visible, so the raw weekly
//!   shares understate the rate of often-updated classes; the fit corrects
//!   that. `--uniform-rate` uses the pooled rate for every table. Updates are
//!   independent between weeks (`--cadence random`, the default); real
//!   monthly tables are more regular, which helps convergence:
//!   `--cadence regular` updates every 1/p weeks (same mean rate) from a
//!   random phase.
//! - **New periods**: each update appends the next period code (next year,
//!   quarter, month, half-year, ISO week, business day, season, interval,
//!   text year); `--no-new-periods` keeps the lists fixed.
//! - **Start**: every table bootstrapped, state current, no debt; `--warmup`
//!   (default 8) uncounted cycles at the normal rate bring the debt to its
//!   steady state before the counted `--cycles` (52).
//! - Every cycle polls the catalog (weekly schedule, gate open); no failures,
//!   no schema changes, no pruning, no `--verify-all`.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use anyhow::{bail, Result};
use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, Weekday};
use clap::{Parser, ValueEnum};
use statbank_client::emulator::World;
use sync_state::{
    batches, eligibility, estimate_rows_per_period, infer_frequency, periods_per_request,
    plan_verification, select_periods, Eligibility, Frequency, SelectOptions, TableState, Tid,
    VerifyInputs, VerifyPolicy, MAX_ROWS_PER_CALL,
};

#[derive(Debug, Parser)]
#[command(name = "bench-verify")]
struct Args {
    /// Seed of the update schedule.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Counted weekly cycles.
    #[arg(long, default_value_t = 52)]
    cycles: usize,
    /// Uncounted cycles before them (normal rate), to reach steady-state debt.
    #[arg(long, default_value_t = 8)]
    warmup: usize,
    /// Which scenarios to run.
    #[arg(long, value_enum, default_value_t = Scenario::Both)]
    scenario: Scenario,
    /// Rows (cells) per period of every table.
    #[arg(long, default_value_t = 2000)]
    cells_per_period: u64,
    /// Bytes of one BULK CSV row.
    #[arg(long, default_value_t = 30)]
    bytes_per_row: u64,
    /// `--verify-cycles` of the rolling policy.
    #[arg(long, default_value_t = 4)]
    verify_cycles: u32,
    /// Extra rolling variants with `--verify-max-periods N` (comma-separated).
    #[arg(long, value_delimiter = ',')]
    verify_max_periods: Vec<usize>,
    /// An extra rolling variant with `--verify-max-rows N`.
    #[arg(long)]
    verify_max_rows: Option<u64>,
    /// Weeks before the snapshot used to fit the update rate.
    #[arg(long, default_value_t = 13)]
    rate_weeks: i64,
    /// The catalog snapshot's date (updates are aged from the end of it).
    #[arg(long, default_value = "2024-11-27")]
    snapshot: NaiveDate,
    /// One pooled update rate for every table instead of one per frequency.
    #[arg(long)]
    uniform_rate: bool,
    /// `random`: each week independently with the fitted probability p;
    /// `regular`: every 1/p weeks (same mean rate) from a random phase.
    #[arg(long, value_enum, default_value_t = Cadence::Random)]
    cadence: Cadence,
    /// Updates do not append a period.
    #[arg(long)]
    no_new_periods: bool,
    /// Print every cycle of these tables (normal scenario).
    #[arg(long, value_delimiter = ',')]
    trace: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Cadence {
    Random,
    Regular,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Normal,
    Revision,
    Both,
}

/// One catalog table as the simulation starts it.
struct Input {
    id: String,
    remote: Vec<Tid>,
    updated: String,
    cells: u64,
    frequency: Frequency,
    /// Age in whole weeks of its `updated` at the snapshot.
    age_weeks: Option<i64>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.cycles == 0 {
        bail!("--cycles must be at least 1");
    }
    let (tables, estimated) = load_catalog(&args)?;
    let rates = fit_rates(&tables, args.rate_weeks);
    let p: Vec<f64> = tables
        .iter()
        .map(|t| {
            if args.uniform_rate {
                rates.pooled
            } else {
                rates.class_rate(t.frequency)
            }
        })
        .collect();
    let total = args.warmup + args.cycles;
    let normal = schedule(&p, total, args.seed, args.cadence);
    let mut revision = normal.clone();
    revision[args.warmup].iter_mut().for_each(|u| *u = true);

    let mut policies: Vec<(String, VerifyPolicy)> = vec![
        (
            "window only (`--verify-cycles 0`)".into(),
            VerifyPolicy {
                cycles: 0,
                ..VerifyPolicy::default()
            },
        ),
        (
            format!("rolling (`--verify-cycles {}`)", args.verify_cycles),
            VerifyPolicy {
                cycles: args.verify_cycles,
                ..VerifyPolicy::default()
            },
        ),
    ];
    for &m in &args.verify_max_periods {
        policies.push((
            format!(
                "rolling (`--verify-cycles {} --verify-max-periods {m}`)",
                args.verify_cycles
            ),
            VerifyPolicy {
                cycles: args.verify_cycles,
                max_periods: Some(m),
                max_rows: None,
            },
        ));
    }
    if let Some(r) = args.verify_max_rows {
        policies.push((
            format!(
                "rolling (`--verify-cycles {} --verify-max-rows {r}`)",
                args.verify_cycles
            ),
            VerifyPolicy {
                cycles: args.verify_cycles,
                max_periods: None,
                max_rows: Some(r),
            },
        ));
    }
    let scenarios: Vec<(&str, &Vec<Vec<bool>>)> = match args.scenario {
        Scenario::Normal => vec![("normal", &normal)],
        Scenario::Revision => vec![("revision", &revision)],
        Scenario::Both => vec![("normal", &normal), ("revision", &revision)],
    };
    let trace: HashSet<usize> = args
        .trace
        .iter()
        .filter_map(|id| tables.iter().position(|t| t.id.eq_ignore_ascii_case(id)))
        .collect();
    let sim = SimOpts {
        warmup: args.warmup,
        late_after: args.verify_cycles.max(1) as usize,
        bytes_per_row: args.bytes_per_row,
        new_periods: !args.no_new_periods,
    };

    let mut rows: Vec<[String; 10]> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut traces: Vec<String> = Vec::new();
    for (name, sched) in &scenarios {
        let mut base: Option<SimResult> = None;
        for (label, policy) in &policies {
            let tr = if *name == "normal" {
                &trace
            } else {
                &HashSet::new()
            };
            let r = simulate(&tables, sched, policy, &sim, tr);
            traces.extend(r.trace.iter().map(|l| format!("{name}, {label}: {l}")));
            let work = format!("{name}: {label}");
            match &base {
                None => {
                    rows.push(baseline_row(&work, &r, &tables));
                    notes.push(format!(
                        "{name}, window only: {} updates in {} cycles; {} of them left {} periods outside new ∪ window that are never re-fetched",
                        r.updates_counted,
                        args.cycles,
                        r.updates_with_outside,
                        r.owed_on_update,
                    ));
                    base = Some(r);
                }
                Some(b) => {
                    rows.push(policy_row(&work, &r, b, &tables, args.verify_cycles));
                    let extra: u64 = r.verify_bytes_by_class.values().sum();
                    let by_class: Vec<String> = r
                        .verify_bytes_by_class
                        .iter()
                        .filter(|(_, b)| **b > 0)
                        .map(|(f, b)| {
                            let n = tables.iter().filter(|t| t.frequency == *f).count();
                            format!(
                                "{f} {:.0}% ({n} tables)",
                                *b as f64 * 100.0 / extra.max(1) as f64
                            )
                        })
                        .collect();
                    notes.push(format!(
                        "{name}, {label}: {} periods verified over the year, {} of them on {} visits only for debt (cached tableinfo, one BULK request each); verification bytes by frequency: {}",
                        r.verified_total,
                        r.verified_debt_only,
                        r.debt_only_visits,
                        by_class.join(", "),
                    ));
                }
            }
        }
    }

    println!(
        "\n| work | requests/cycle (median · p95 · max) | MiB/cycle (median · p95 · max) | extra requests/cycle (median · p95 · max) | extra MiB/cycle (median · p95 · max) | year: requests, GiB (extra) | periods owed after a cycle (median · max) | worst convergence, cycles (table) | converged ≤ {n} cycles: tables (updates) | longest wait of a period after an update, cycles (table); waits > {n} |",
        n = args.verify_cycles.max(1)
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!("| {} |", r.join(" | "));
    }
    println!();
    for n in &notes {
        println!("- {n}");
    }
    println!("\nAssumptions:");
    let cells = format!("{} cells per period for every table", args.cells_per_period);
    let n_periods: usize = tables.iter().map(|t| t.remote.len()).sum();
    println!(
        "- catalog: {} tables of 2024-11-27 ({} periods at the start; {} `a:b` interval tables estimated as one period per end year)",
        tables.len(),
        n_periods,
        estimated
    );
    println!(
        "- size: {cells}, {} bytes per BULK row; MAX_ROWS_PER_CALL = {MAX_ROWS_PER_CALL}; tableinfo requests counted, not their bytes; the catalog request (1 per cycle) is in every row",
        args.bytes_per_row
    );
    println!(
        "- update rate (geometric fit to the age of each table's last `updated` over the {} weeks before the end of {}): {}{}",
        args.rate_weeks,
        args.snapshot,
        rates.describe(),
        if args.uniform_rate {
            "; pooled rate used for every table (--uniform-rate)"
        } else {
            ""
        }
    );
    println!(
        "- tables whose `updated` falls in each of those weeks, newest first: {}",
        rates
            .weekly
            .iter()
            .map(|n| format!("{n} ({:.1}%)", *n as f64 * 100.0 / tables.len() as f64))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "- {} counted weekly cycles after {} warm-up cycles, seed {}, {} cadence; {}; revision = every table updated in the first counted cycle, then the same schedule",
        args.cycles,
        args.warmup,
        args.seed,
        match args.cadence {
            Cadence::Random => "random (independent weeks)",
            Cadence::Regular => "regular (every 1/p weeks)",
        },
        if args.no_new_periods {
            "updates append no period"
        } else {
            "each update appends the next period"
        }
    );
    println!("- convergence: cycles from an update (cycle 1) until the table owes no verification; a later update does not restart the clock");
    if !traces.is_empty() {
        println!("\nTrace (cycles ≤ 0 are warm-up; window = periods of new ∪ window fetched):");
        for t in &traces {
            println!("- {t}");
        }
    }
    Ok(())
}

/// The catalog tables with their period lists (see the module docs); also
/// how many `a:b` tables had their periods estimated.
fn load_catalog(args: &Args) -> Result<(Vec<Input>, usize)> {
    let world = World::full_catalog();
    let end = args
        .snapshot
        .succ_opt()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .unwrap_or_default();
    let mut out = Vec::with_capacity(world.tables.len());
    let mut estimated = 0;
    for t in world.tables.values() {
        let mut codes: Vec<String> = t.time_values.iter().map(|v| v.id.clone()).collect();
        if let Some(est) = estimate_intervals(&codes) {
            codes = est;
            estimated += 1;
        }
        let remote = codes
            .into_iter()
            .map(Tid::new)
            .collect::<Result<Vec<_>, _>>()?;
        let cells = args.cells_per_period.max(1);
        let age_weeks = NaiveDateTime::parse_from_str(&t.updated, "%Y-%m-%dT%H:%M:%S")
            .ok()
            .map(|u| (end - u).num_seconds().div_euclid(7 * 86_400));
        out.push(Input {
            id: t.id.clone(),
            frequency: infer_frequency(&remote),
            remote,
            updated: t.updated.clone(),
            cells,
            age_weeks,
        });
    }
    if out.is_empty() {
        bail!("the emulator's catalog is empty");
    }
    Ok((out, estimated))
}

/// `[a:b, c:d]` (what the emulator falls back to for intervals) → one
/// interval per end year from `b` to `d`, each as wide as the latest.
fn estimate_intervals(codes: &[String]) -> Option<Vec<String>> {
    let [first, last] = codes else { return None };
    let split = |s: &str| -> Option<(i32, i32)> {
        let (a, b) = s.split_once(':')?;
        let year = |x: &str| {
            (x.len() == 4 && x.bytes().all(|c| c.is_ascii_digit()))
                .then(|| x.parse().ok())
                .flatten()
        };
        Some((year(a)?, year(b)?))
    };
    let ((_, b), (c, d)) = (split(first)?, split(last)?);
    if d <= b {
        return None;
    }
    let width = d - c;
    Some((b..=d).map(|e| format!("{}:{e}", e - width)).collect())
}

/// Weekly update probabilities fitted to the catalog.
struct Rates {
    /// (class, tables, updated within the window, fitted p).
    classes: Vec<(Frequency, usize, usize, f64)>,
    pooled: f64,
    /// Tables whose last update is 0, 1, … weeks old.
    weekly: Vec<usize>,
}

impl Rates {
    fn class_rate(&self, f: Frequency) -> f64 {
        self.classes
            .iter()
            .find(|c| c.0 == f)
            .map_or(self.pooled, |c| c.3)
    }

    fn describe(&self) -> String {
        let mut s = format!("all {:.2}%/week", self.pooled * 100.0);
        for (f, n, u, p) in &self.classes {
            s.push_str(&format!(", {f} {:.1}% ({u} of {n} updated)", p * 100.0));
        }
        s
    }
}

fn fit_rates(tables: &[Input], weeks: i64) -> Rates {
    let weeks = weeks.max(1);
    let fit = |ts: &[&Input]| -> (usize, f64) {
        let (mut updated, mut quiet) = (0usize, 0i64);
        for t in ts {
            match t.age_weeks {
                Some(a) if (0..weeks).contains(&a) => {
                    updated += 1;
                    quiet += a;
                }
                _ => quiet += weeks,
            }
        }
        let p = if updated == 0 {
            0.0
        } else {
            updated as f64 / (updated as f64 + quiet as f64)
        };
        (updated, p)
    };
    let all: Vec<&Input> = tables.iter().collect();
    let (_, pooled) = fit(&all);
    let classes = Frequency::ALL
        .into_iter()
        .filter_map(|f| {
            let ts: Vec<&Input> = tables.iter().filter(|t| t.frequency == f).collect();
            (!ts.is_empty()).then(|| {
                let (u, p) = fit(&ts);
                (f, ts.len(), u, p)
            })
        })
        .collect();
    let weekly = (0..weeks)
        .map(|k| tables.iter().filter(|t| t.age_weeks == Some(k)).count())
        .collect();
    Rates {
        classes,
        pooled,
        weekly,
    }
}

/// xorshift64* seeded through splitmix64: deterministic and good enough for
/// Bernoulli draws.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)).max(1))
    }

    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `[cycle][table]`: whether the table's catalog `updated` changes then.
fn schedule(p: &[f64], cycles: usize, seed: u64, cadence: Cadence) -> Vec<Vec<bool>> {
    let mut rng = Rng::new(seed);
    match cadence {
        Cadence::Random => (0..cycles)
            .map(|_| p.iter().map(|&p| rng.next_f64() < p).collect())
            .collect(),
        Cadence::Regular => {
            // An update whenever `(c + phase) · p` crosses an integer: gaps
            // of floor or ceil of 1/p weeks.
            let phase: Vec<f64> = p.iter().map(|_| rng.next_f64()).collect();
            (0..cycles)
                .map(|c| {
                    p.iter()
                        .zip(&phase)
                        .map(|(&p, &ph)| {
                            let at = |c: f64| ((c + ph / p.max(1e-9)) * p).floor();
                            p > 0.0 && at(c as f64 + 1.0) > at(c as f64)
                        })
                        .collect()
                })
                .collect()
        }
    }
}

/// The period code after `code`, in the same format; `None` when unknown.
fn next_code(code: &str) -> Option<String> {
    let num = |s: &str| -> Option<i32> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let year = code.get(..4).and_then(num);
    match (Frequency::of_code(code), year) {
        (Frequency::Yearly, Some(y)) => Some(format!("{}", y + 1)),
        (Frequency::Quarterly | Frequency::HalfYearly | Frequency::Monthly, Some(y)) => {
            let (letter, per_year, width) = match code.as_bytes()[4] {
                b'K' => ('K', 4, 1),
                b'H' => ('H', 2, 1),
                _ => ('M', 12, 2),
            };
            let n = num(&code[5..])?;
            let (y, n) = if n >= per_year {
                (y + 1, 1)
            } else {
                (y, n + 1)
            };
            Some(format!("{y}{letter}{n:0width$}"))
        }
        (Frequency::Weekly, Some(y)) => {
            let w = u32::try_from(num(&code[5..])?).ok()?;
            let (y, w) = match NaiveDate::from_isoywd_opt(y, w + 1, Weekday::Mon) {
                Some(_) => (y, w + 1),
                None => (y + 1, 1),
            };
            Some(format!("{y}U{w:02}"))
        }
        (Frequency::Daily, Some(y)) => {
            let m = u32::try_from(num(&code[5..7])?).ok()?;
            let d = u32::try_from(num(&code[8..10])?).ok()?;
            let mut day = NaiveDate::from_ymd_opt(y, m, d)? + Duration::days(1);
            while matches!(day.weekday(), Weekday::Sat | Weekday::Sun) {
                day += Duration::days(1);
            }
            Some(day.format("%YM%mD%d").to_string())
        }
        (Frequency::Other, _) => {
            // `2020/2021`, `2020:2022`: both years + 1.
            if code.len() == 9 && matches!(code.as_bytes()[4], b'/' | b':') {
                let (a, b) = (num(&code[..4])?, num(&code[5..])?);
                return Some(format!("{}{}{}", a + 1, &code[4..5], b + 1));
            }
            // Text around exactly one 4-digit year (`AUG - DEC 2019`).
            let digits: Vec<usize> = code
                .char_indices()
                .filter(|(_, c)| c.is_ascii_digit())
                .map(|(i, _)| i)
                .collect();
            match digits[..] {
                [a, _, _, d] if d == a + 3 => {
                    let y = num(&code[a..a + 4])?;
                    Some(format!("{}{}{}", &code[..a], y + 1, &code[a + 4..]))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

struct SimOpts {
    warmup: usize,
    /// A period re-fetched more than this many cycles after an update is
    /// late (`--verify-cycles`).
    late_after: usize,
    bytes_per_row: u64,
    new_periods: bool,
}

/// What one counted cycle cost under one policy.
#[derive(Debug, Default, Clone, Copy)]
struct CycleCost {
    /// Catalog + tableinfo + BULK.
    requests: u64,
    bytes: u64,
    /// Periods owed by all tables after the cycle.
    debt: u64,
}

/// One update of a table in a counted cycle.
struct Event {
    table: usize,
    /// Absolute cycle index.
    cycle: usize,
    /// Cycles until the table owed nothing (1 = at once).
    converged: Option<usize>,
}

#[derive(Default)]
struct SimResult {
    cycles: Vec<CycleCost>,
    events: Vec<Event>,
    total_cycles: usize,
    updates_counted: u64,
    updates_with_outside: u64,
    /// Periods outside new ∪ window at the counted updates.
    owed_on_update: u64,
    verified_total: u64,
    verified_debt_only: u64,
    debt_only_visits: u64,
    /// Extra (verification) bytes per frequency class.
    verify_bytes_by_class: BTreeMap<Frequency, u64>,
    /// Longest wait of a period for its first fetch after an update:
    /// (cycles, still waiting at the end, table).
    stale_worst: Option<(usize, bool, usize)>,
    /// Period re-fetches after an update (period, update) and how many
    /// waited more than `--verify-cycles` cycles (or still wait that long).
    stale_waits: u64,
    stale_late: u64,
    trace: Vec<String>,
}

impl SimResult {
    fn stale(&mut self, cycles: usize, open: bool, table: usize, late_after: usize) {
        if self.stale_worst.is_none_or(|(w, _, _)| cycles > w) {
            self.stale_worst = Some((cycles, open, table));
        }
        if !open || cycles > late_after {
            self.stale_waits += 1;
            self.stale_late += u64::from(cycles > late_after);
        }
    }
}

/// One table's simulated mirror.
struct Mirror {
    remote: Vec<Tid>,
    local: BTreeSet<Tid>,
    catalog_updated: String,
    entry: TableState,
    pending: Vec<usize>,
    /// Per remote position: the first update (cycle) after the period's
    /// last fetch, if it was not fetched since.
    dirty: Vec<Option<usize>>,
}

fn simulate(
    tables: &[Input],
    sched: &[Vec<bool>],
    policy: &VerifyPolicy,
    opts: &SimOpts,
    trace: &HashSet<usize>,
) -> SimResult {
    let mut mirrors: Vec<Mirror> = tables
        .iter()
        .map(|t| Mirror {
            remote: t.remote.clone(),
            local: t.remote.iter().cloned().collect(),
            catalog_updated: t.updated.clone(),
            entry: TableState {
                last_seen_updated: Some(t.updated.clone()),
                bootstrap_complete: true,
                ..TableState::default()
            },
            pending: Vec::new(),
            dirty: vec![None; t.remote.len()],
        })
        .collect();
    let mut out = SimResult {
        total_cycles: sched.len(),
        ..SimResult::default()
    };
    for (c, updates) in sched.iter().enumerate() {
        let counted = c >= opts.warmup;
        let mut cost = CycleCost {
            requests: 1,
            ..CycleCost::default()
        };
        for (i, (t, m)) in tables.iter().zip(mirrors.iter_mut()).enumerate() {
            if updates[i] {
                m.catalog_updated = format!("{}#{c}", t.updated);
                if opts.new_periods {
                    if let Some(next) = m
                        .remote
                        .last()
                        .and_then(|l| next_code(l.as_str()))
                        .and_then(|n| Tid::new(n).ok())
                    {
                        if !m.remote.contains(&next) {
                            m.remote.push(next);
                        }
                    }
                }
                m.dirty.resize(m.remote.len(), None);
                for d in m.dirty.iter_mut().filter(|d| d.is_none()) {
                    *d = Some(c);
                }
            }
            // As `process_table`: with verification off an old debt neither
            // visits the table nor survives its next sync.
            let mut prev = m.entry.clone();
            if policy.cycles == 0 {
                prev.verify_debt.clear();
            }
            // Every table was bootstrapped before the first cycle, so it has
            // partitions and is never bootstrapped again.
            if eligibility(Some(&prev), &m.catalog_updated, true) == Eligibility::Unchanged {
                continue;
            }
            // `prepare`
            let frequency = infer_frequency(&m.remote);
            let rows = estimate_rows_per_period(
                &[
                    usize::try_from(t.cells).unwrap_or(usize::MAX),
                    m.remote.len(),
                ],
                m.remote.len(),
            );
            let per_request = periods_per_request(rows, MAX_ROWS_PER_CALL);
            // `incremental` + `verification`
            let sel = select_periods(
                &m.remote,
                &m.local,
                frequency,
                SelectOptions {
                    bootstrap: false,
                    prune: false,
                },
            );
            let updated_changed =
                prev.last_seen_updated.as_deref() != Some(m.catalog_updated.as_str());
            let vplan = plan_verification(
                &m.remote,
                &sel,
                VerifyInputs {
                    debt: &prev.verify_debt,
                    per_cycle: prev.verify_per_cycle,
                    updated_changed,
                    verify_all: false,
                    rows_per_period: rows,
                },
                policy,
            );
            let debt_only = !updated_changed;
            let wanted: HashSet<&Tid> = if debt_only {
                vplan.verify.iter().collect()
            } else {
                sel.fetch.iter().chain(&vplan.verify).collect()
            };
            let fetch_at: Vec<usize> = (0..m.remote.len())
                .filter(|&j| wanted.contains(&m.remote[j]))
                .collect();
            let fetch: Vec<Tid> = fetch_at.iter().map(|&j| m.remote[j].clone()).collect();
            let bulk = batches(&fetch, per_request).len() as u64;
            let fetched = fetch.len() as u64;
            m.local.extend(fetch);
            for &j in &fetch_at {
                if let Some(since) = m.dirty[j].take() {
                    if since >= opts.warmup {
                        out.stale(c - since + 1, false, i, opts.late_after);
                    }
                }
            }
            // `save_synced`
            m.entry.last_seen_updated = Some(m.catalog_updated.clone());
            m.entry.frequency = Some(frequency);
            m.entry.verify_debt = vplan.debt_after;
            m.entry.verify_per_cycle = vplan.per_cycle;

            if trace.contains(&i) {
                out.trace.push(format!(
                    "cycle {:>2} {}: {} periods, {}, fetched {fetched} in {bulk} BULK (window {}, verified {}), owes {} ({} per cycle)",
                    c as i64 - opts.warmup as i64 + 1,
                    t.id,
                    m.remote.len(),
                    if updated_changed { "updated" } else { "debt only" },
                    if debt_only { 0 } else { sel.fetch.len() },
                    vplan.verify.len(),
                    m.entry.verify_debt.len(),
                    m.entry
                        .verify_per_cycle
                        .map_or("-".into(), |n| n.to_string()),
                ));
            }
            if !counted {
                continue;
            }
            // A debt-only visit reads the cached tableinfo (`prepare`).
            cost.requests += u64::from(!debt_only) + bulk;
            cost.bytes += fetched * rows * opts.bytes_per_row;
            out.verified_total += vplan.verify.len() as u64;
            *out.verify_bytes_by_class.entry(t.frequency).or_default() +=
                vplan.verify.len() as u64 * rows * opts.bytes_per_row;
            if debt_only {
                out.debt_only_visits += 1;
                out.verified_debt_only += vplan.verify.len() as u64;
            }
            if updated_changed {
                out.updates_counted += 1;
                let outside = (m.remote.len() - sel.fetch.len()) as u64;
                if outside > 0 {
                    out.updates_with_outside += 1;
                    out.owed_on_update += outside;
                }
                m.pending.push(out.events.len());
                out.events.push(Event {
                    table: i,
                    cycle: c,
                    converged: None,
                });
            }
            if m.entry.verify_debt.is_empty() {
                for e in m.pending.drain(..) {
                    let ev = &mut out.events[e];
                    ev.converged = Some(c - ev.cycle + 1);
                }
            }
        }
        if counted {
            cost.debt = mirrors
                .iter()
                .map(|m| m.entry.verify_debt.len() as u64)
                .sum();
            out.cycles.push(cost);
        }
    }
    for (i, m) in mirrors.iter().enumerate() {
        for since in m.dirty.iter().flatten() {
            if *since >= opts.warmup {
                out.stale(sched.len() - since, true, i, opts.late_after);
            }
        }
    }
    out
}

/// The longest wait of a period for its re-fetch after an update, and the
/// share of (period, update) re-fetches that came late.
fn stale_cell(r: &SimResult, tables: &[Input]) -> String {
    let worst = match r.stale_worst {
        Some((n, open, t)) => format!("{}{n} ({})", if open { "≥ " } else { "" }, tables[t].id),
        None => "—".into(),
    };
    format!(
        "{worst}; {:.1}% of {}",
        r.stale_late as f64 * 100.0 / r.stale_waits.max(1) as f64,
        r.stale_waits
    )
}

/// Median, p95 (nearest rank) and max.
fn spread(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let max = s.last().copied().unwrap_or(0.0);
    let rank = ((s.len() as f64 * 0.95).ceil() as usize).clamp(1, s.len().max(1));
    let p95 = s.get(rank - 1).copied().unwrap_or(0.0);
    (bins::bench::median(s), p95, max)
}

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = MIB * 1024.0;

fn fmt3(v: &[f64], digits: usize) -> String {
    let (m, p, x) = spread(v);
    format!("{m:.digits$} · {p:.digits$} · {x:.digits$}")
}

fn requests(r: &SimResult) -> Vec<f64> {
    r.cycles.iter().map(|c| c.requests as f64).collect()
}

fn mib(r: &SimResult) -> Vec<f64> {
    r.cycles.iter().map(|c| c.bytes as f64 / MIB).collect()
}

fn baseline_row(work: &str, r: &SimResult, tables: &[Input]) -> [String; 10] {
    let req: u64 = r.cycles.iter().map(|c| c.requests).sum();
    let bytes: u64 = r.cycles.iter().map(|c| c.bytes).sum();
    [
        work.into(),
        fmt3(&requests(r), 0),
        fmt3(&mib(r), 1),
        "—".into(),
        "—".into(),
        format!("{req}, {:.2}", bytes as f64 / GIB),
        "0 · 0".into(),
        "never (older periods not re-fetched)".into(),
        "—".into(),
        stale_cell(r, tables),
    ]
}

fn policy_row(
    work: &str,
    r: &SimResult,
    base: &SimResult,
    tables: &[Input],
    within: u32,
) -> [String; 10] {
    let extra_req: Vec<f64> = r
        .cycles
        .iter()
        .zip(&base.cycles)
        .map(|(a, b)| a.requests as f64 - b.requests as f64)
        .collect();
    let extra_mib: Vec<f64> = r
        .cycles
        .iter()
        .zip(&base.cycles)
        .map(|(a, b)| (a.bytes as f64 - b.bytes as f64) / MIB)
        .collect();
    let req: u64 = r.cycles.iter().map(|c| c.requests).sum();
    let base_req: u64 = base.cycles.iter().map(|c| c.requests).sum();
    let bytes: u64 = r.cycles.iter().map(|c| c.bytes).sum();
    let base_bytes: u64 = base.cycles.iter().map(|c| c.bytes).sum();
    let debt: Vec<f64> = r.cycles.iter().map(|c| c.debt as f64).collect();
    let (debt_med, _, debt_max) = spread(&debt);

    // Convergence.
    let within = within.max(1) as usize;
    let mut worst: Option<(usize, bool, usize)> = None; // (cycles, open, table)
    let mut table_bad = vec![None::<bool>; tables.len()];
    let (mut ev_ok, mut ev_decided) = (0usize, 0usize);
    for e in &r.events {
        let (n, open) = match e.converged {
            Some(n) => (n, false),
            None => (r.total_cycles - e.cycle, true),
        };
        if worst.is_none_or(|(w, _, _)| n > w) {
            worst = Some((n, open, e.table));
        }
        let decided = !open || n > within;
        if decided {
            ev_decided += 1;
            let ok = !open && n <= within;
            ev_ok += usize::from(ok);
            let slot = &mut table_bad[e.table];
            *slot = Some(slot.unwrap_or(false) || !ok);
        }
    }
    let decided_tables = table_bad.iter().filter(|b| b.is_some()).count();
    let ok_tables = table_bad.iter().filter(|b| **b == Some(false)).count();
    let pct = |a: usize, b: usize| {
        if b == 0 {
            "—".to_string()
        } else {
            format!("{:.1}%", a as f64 * 100.0 / b as f64)
        }
    };
    let worst = match worst {
        Some((n, open, t)) => format!("{}{n} ({})", if open { "≥ " } else { "" }, tables[t].id),
        None => "—".into(),
    };
    [
        work.into(),
        fmt3(&requests(r), 0),
        fmt3(&mib(r), 1),
        fmt3(&extra_req, 0),
        fmt3(&extra_mib, 1),
        format!(
            "{req}, {:.2} (+{}, +{:.2}; +{:.0}% / +{:.0}%)",
            bytes as f64 / GIB,
            req.saturating_sub(base_req),
            bytes.saturating_sub(base_bytes) as f64 / GIB,
            req.saturating_sub(base_req) as f64 * 100.0 / base_req.max(1) as f64,
            bytes.saturating_sub(base_bytes) as f64 * 100.0 / base_bytes.max(1) as f64,
        ),
        format!("{debt_med:.0} · {debt_max:.0}"),
        worst,
        format!(
            "{} of {} ({} of {} updates)",
            pct(ok_tables, decided_tables),
            decided_tables,
            pct(ev_ok, ev_decided),
            ev_decided
        ),
        stale_cell(r, tables),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quarters(first: i32, last: i32) -> Vec<Tid> {
        (first..=last)
            .flat_map(|y| (1..=4).map(move |q| format!("{y}K{q}")))
            .map(|c| Tid::new(c).expect("tid"))
            .collect()
    }

    fn input(id: &str, remote: Vec<Tid>) -> Input {
        Input {
            id: id.into(),
            frequency: infer_frequency(&remote),
            remote,
            updated: "2024-11-11T08:00:00".into(),
            cells: 200_025,
            age_weeks: Some(2),
        }
    }

    /// FOLK1A-shaped: 68 quarters (2008K1–2024K4), one update, default
    /// policy. With the appended 2025K1: 69 periods, window 8, 61 owed,
    /// 16 per cycle → 16, 16, 16, 13: converged in 4 cycles.
    #[test]
    fn one_quarterly_update_converges_in_four_cycles() {
        let tables = vec![input("FOLK1A", quarters(2008, 2024))];
        assert_eq!(tables[0].remote.len(), 68);
        let mut sched = vec![vec![false]; 8];
        sched[0][0] = true;
        let opts = SimOpts {
            warmup: 0,
            late_after: 4,
            bytes_per_row: 30,
            new_periods: true,
        };
        let trace: HashSet<usize> = [0].into_iter().collect();
        let r = simulate(&tables, &sched, &VerifyPolicy::default(), &opts, &trace);
        assert_eq!(r.events.len(), 1);
        assert_eq!(r.events[0].converged, Some(4));
        assert_eq!(r.verified_total, 61);
        assert_eq!(r.owed_on_update, 61);
        let debts: Vec<u64> = r.cycles.iter().map(|c| c.debt).collect();
        assert_eq!(debts, [45, 29, 13, 0, 0, 0, 0, 0]);
        // 200,025 rows per period → 249 periods per request: one BULK per
        // visit, plus tableinfo and the catalog.
        assert_eq!(r.cycles[0].requests, 3);
        assert_eq!(r.cycles[0].bytes, (8 + 16) * 200_025 * 30);
        assert_eq!(r.cycles[4].requests, 1);
        // Window only: 8 periods, never anything else.
        let off = VerifyPolicy {
            cycles: 0,
            ..VerifyPolicy::default()
        };
        let a = simulate(&tables, &sched, &off, &opts, &HashSet::new());
        assert_eq!(a.cycles[0].bytes, 8 * 200_025 * 30);
        assert_eq!(a.cycles[1].requests, 1);
    }

    /// Two updates three cycles apart: the second restarts the debt, and
    /// the first update counts until the debt is zero.
    #[test]
    fn a_second_update_keeps_the_first_open() {
        let tables = vec![input("Q", quarters(2008, 2024))];
        let mut sched = vec![vec![false]; 10];
        sched[0][0] = true;
        sched[2][0] = true;
        let opts = SimOpts {
            warmup: 0,
            late_after: 4,
            bytes_per_row: 30,
            new_periods: false,
        };
        let r = simulate(
            &tables,
            &sched,
            &VerifyPolicy::default(),
            &opts,
            &HashSet::new(),
        );
        let conv: Vec<Option<usize>> = r.events.iter().map(|e| e.converged).collect();
        assert_eq!(conv, [Some(6), Some(4)]);
    }

    #[test]
    fn next_codes() {
        for (a, b) in [
            ("2024", "2025"),
            ("2024K4", "2025K1"),
            ("2024K3", "2024K4"),
            ("2024M12", "2025M01"),
            ("2024M03", "2024M04"),
            ("2024H2", "2025H1"),
            ("2020U53", "2021U01"),
            ("2024U52", "2025U01"),
            ("2024U07", "2024U08"),
            ("2024M11D22", "2024M11D25"),
            ("2020/2021", "2021/2022"),
            ("2020:2022", "2021:2023"),
            ("AUG - DEC 2022", "AUG - DEC 2023"),
        ] {
            assert_eq!(next_code(a).as_deref(), Some(b), "{a}");
            assert_eq!(
                Frequency::of_code(a),
                Frequency::of_code(b),
                "{a} keeps its format"
            );
        }
        assert_eq!(next_code("x"), None);
        let est = estimate_intervals(&["2007:2009".into(), "2020:2022".into()]).expect("est");
        assert_eq!(est.len(), 14);
        assert_eq!(est[0], "2007:2009");
        assert_eq!(est[13], "2020:2022");
        assert_eq!(estimate_intervals(&["2024".into(), "2025".into()]), None);
    }
}
