//! The whole sync cycle (`bins::run_sync_cycle`), as a scheduler would run
//! it: a bootstrap run, then changes at the source (a new quarter, a revised
//! quarter, a new `updated` stamp), then an incremental run that fetches the
//! refresh window and rewrites exactly the changed periods, then a run that
//! the weekly catalog gate skips.
//!
//! ```text
//! cargo run -p examples --example whole_cycle
//! ```
//!
//! The example starts an in-process emulator, mutates it between runs and
//! checks that the second run's manifest lists exactly the changed periods
//! in `changed_tids` and the rest of the refresh window in
//! `unchanged_refreshed`. Given a base URL (`-- https://api.statbank.dk/v1`)
//! it runs the same cycles against that API, without mutating anything or
//! checking the outcome (mind that a real bootstrap downloads the tables in
//! full: FOLK1A alone has some 14 million rows). Runs use a fixed clock, so
//! their ids and the weekly gate are reproducible; the data folder is a temp
//! folder.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use bins::{run_sync_cycle, Clock, SyncOptions};
use chrono::{TimeZone, Utc};
use statbank_client::emulator::{Emulator, World};
use statbank_client::StatbankClient;
use sync_state::{list_runs, DataDir, RunManifest, SyncState, TableId, Tid};

/// The tables this service mirrors.
const TABLES: [&str; 3] = ["FOLK1A", "BIL10", "KORN2"];

#[tokio::main]
async fn main() -> Result<()> {
    let (emulator, base_url) = match std::env::args().nth(1) {
        Some(url) => (None, url),
        None => {
            let emu = Emulator::start(World::demo())
                .await
                .context("starting the emulator")?;
            let url = emu.base_url();
            println!("started the StatBank emulator at {url}");
            (Some(emu), url)
        }
    };
    let client = StatbankClient::builder()
        .base_url(&base_url)
        .min_interval(if emulator.is_some() {
            Duration::ZERO
        } else {
            Duration::from_millis(250)
        })
        .build()?;
    let data = tempfile::tempdir().context("creating a temp data folder")?;
    let t0 = Utc
        .with_ymd_and_hms(2026, 1, 5, 22, 0, 0)
        .single()
        .context("valid time")?;
    let folk = TableId::new("FOLK1A")?;

    let mut opts = SyncOptions::new(data.path())?;
    opts.tables = Some(
        TABLES
            .iter()
            .map(TableId::new)
            .collect::<Result<Vec<_>, _>>()?,
    );

    // Run 1: nothing on disk yet, every table is bootstrapped.
    opts.clock = Clock::fixed(t0);
    let first = run_sync_cycle(&client, &opts).await?;
    report("run 1: bootstrap", &first, &opts.data_dir);

    // Changes at the source: a new quarter, a revision of an old one, and
    // the new `updated` stamp the catalog shows for the table.
    if let Some(emu) = &emulator {
        let h = emu.handle();
        h.add_period("FOLK1A", "2025K1");
        h.revise_period("FOLK1A", "2024K3");
        h.set_updated("FOLK1A", "2026-01-01T08:00:00");
        println!(
            "\n-- emulator: FOLK1A gets 2025K1, 2024K3 is revised, updated = 2026-01-01T08:00:00"
        );
    }

    // Run 2, a day later: the weekly gate is closed, so force the poll.
    opts.clock = Clock::fixed(t0 + chrono::Duration::days(1));
    opts.gate.force = true;
    let second = run_sync_cycle(&client, &opts).await?;
    report(
        "run 2: incremental (forced catalog poll)",
        &second,
        &opts.data_dir,
    );
    let r = second
        .tables
        .get(&folk)
        .context("FOLK1A missing from the manifest")?;
    println!(
        "\nFOLK1A in the run 2 manifest:\n{}",
        serde_json::to_string_pretty(r)?
    );
    if emulator.is_some() {
        let tids = |codes: &[&str]| -> Result<Vec<Tid>> {
            codes.iter().map(|c| Ok(Tid::new(*c)?)).collect()
        };
        ensure!(
            r.changed_tids == tids(&["2024K3", "2025K1"])?,
            "changed_tids: {:?}",
            r.changed_tids
        );
        ensure!(
            r.unchanged_refreshed.as_deref() == Some(&tids(&["2024K1", "2024K2", "2024K4"])?[..]),
            "unchanged_refreshed: {:?}",
            r.unchanged_refreshed
        );
        ensure!(
            second.summary.tables_skipped == TABLES.len() - 1,
            "the other tables should be skipped as unchanged"
        );
        println!(
            "checked: changed_tids = [2024K3, 2025K1] exactly; unchanged_refreshed = the rest of the refresh window"
        );
    }

    // Run 3, another day later and not forced: the weekly gate skips it.
    opts.clock = Clock::fixed(t0 + chrono::Duration::days(2));
    opts.gate.force = false;
    let third = run_sync_cycle(&client, &opts).await?;
    report("run 3: not forced", &third, &opts.data_dir);

    // What a DB apply (or any consumer) reads afterwards.
    let dir = &opts.data_dir;
    let runs = list_runs(dir)?;
    println!(
        "\nruns on disk: {}",
        runs.iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let manifest = RunManifest::load(dir, &second.run_id)?;
    for (table, result) in manifest.tables_with_changes() {
        println!(
            "to apply from {}: {table} {:?}",
            manifest.run_id, result.changed_tids
        );
    }
    let state = SyncState::load(dir)?;
    if let Some(s) = state.tables.get(&folk) {
        println!(
            "state.json FOLK1A: last_seen_updated {}, frequency {}, bootstrap_complete {}, last_status {}",
            s.last_seen_updated.as_deref().unwrap_or("-"),
            s.frequency.map_or("-", |f| f.as_str()),
            s.bootstrap_complete,
            s.last_status.as_deref().unwrap_or("-")
        );
    }
    println!(
        "state.json last_catalog_poll_at {}",
        state
            .last_catalog_poll_at
            .map_or_else(|| "-".to_string(), |t| t.to_string())
    );

    if let Some(emu) = emulator {
        emu.shutdown().await;
    }
    Ok(())
}

fn report(title: &str, m: &RunManifest, dir: &DataDir) {
    println!("\n== {title}");
    println!(
        "  run {}: {} (catalog polled: {}{})",
        m.run_id,
        m.status,
        m.catalog.polled,
        m.catalog
            .reason
            .as_deref()
            .map(|r| format!(", reason {r}"))
            .unwrap_or_default()
    );
    println!(
        "  summary: {} tables, {} synced, {} skipped, {} failed, {} with changes, {} rows in {} files",
        m.summary.tables_total,
        m.summary.tables_synced,
        m.summary.tables_skipped,
        m.summary.tables_failed,
        m.summary.tables_with_changed_tids,
        m.summary.rows_written,
        m.summary.files_written
    );
    for (id, r) in &m.tables {
        let freq = r.frequency.map_or("", |f| f.as_str());
        println!(
            "  {:<7} {:<7} {:<11} changed {:>2}  unchanged_refreshed {:>2}  rows {:>7}  bytes {:>8}{}",
            id.as_str(),
            r.status.as_str(),
            freq,
            r.changed_tids.len(),
            r.unchanged_refreshed.as_ref().map_or(0, Vec::len),
            r.rows_written.unwrap_or(0),
            r.bytes_fetched.unwrap_or(0),
            r.reason
                .as_deref()
                .map(|x| format!("  ({x})"))
                .unwrap_or_default()
        );
    }
    println!(
        "  manifest: {}",
        dir.display_key(&dir.manifest_key(&m.run_id))
    );
}
