//! The pure decisions of a sync cycle (`sync-state`), without touching disk:
//! the weekly catalog gate, whether a table needs syncing, its frequency and
//! refresh window, which periods to fetch, and how to split them into BULK
//! requests. Every decision takes `now` as an argument, so a service (or a
//! test) decides what "now" is.
//!
//! ```text
//! cargo run -p examples --example state_planner
//! cargo run -p examples --example state_planner -- https://api.statbank.dk/v1
//! ```
//!
//! The remote period lists and value counts come from the API (an
//! in-process emulator unless a base URL is given); the local side (state,
//! stored periods) is made up in memory as a previous run would have left it.

use std::collections::BTreeSet;
use std::time::Duration as StdDuration;

use anyhow::{Context, Result};
use chrono::{DateTime, Duration, TimeZone, Utc};
use statbank_client::emulator::{Emulator, World};
use statbank_client::{CatalogEntry, StatbankClient, TableInfoExt, TablesRequest};
use sync_state::{
    batches, catalog_gate, eligibility, estimate_rows_per_period, infer_frequency,
    periods_per_request, select_periods, Eligibility, GateDecision, GatePolicy, SelectOptions,
    SyncState, TableId, TableState, Tid, MAX_ROWS_PER_CALL,
};

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
            StdDuration::ZERO
        } else {
            StdDuration::from_millis(250)
        })
        .build()?;

    // A service would pass Utc::now(); a fixed instant keeps the output
    // reproducible.
    let now: DateTime<Utc> = Utc
        .with_ymd_and_hms(2026, 1, 5, 22, 0, 0)
        .single()
        .context("valid time")?;
    println!("planning as of {now}");

    let catalog = client.tables(&TablesRequest::default()).await?;
    let table = TableId::new("FOLK1AM")?;
    let entry = catalog
        .tables
        .iter()
        .find(|e| e.id == table.as_str())
        .with_context(|| format!("{table} is not in the catalog"))?;
    let (info, _) = client.table_info(&table).await?;
    let remote: Vec<Tid> = info.tids()?;

    // What a previous run left behind (in a service: SyncState::load and
    // PartitionStore::list_tids): a poll 8 days ago, the table synced at an
    // older `updated`, every period but the two newest stored, plus one
    // period the API no longer lists.
    let mut local: BTreeSet<Tid> = remote[..remote.len().saturating_sub(2)]
        .iter()
        .cloned()
        .collect();
    local.insert(Tid::new("2021M09")?);
    let mut state = SyncState {
        last_catalog_poll_at: Some((now - Duration::days(8)).into()),
        ..SyncState::default()
    };
    state.tables.insert(
        table.clone(),
        TableState {
            last_seen_updated: Some("2024-10-10T08:00:00".into()),
            last_sync_at: Some((now - Duration::days(8)).into()),
            bootstrap_complete: true,
            last_status: Some("synced".into()),
            ..TableState::default()
        },
    );

    // 1. The weekly gate: is the catalog polled in this cycle?
    println!("\n== catalog gate");
    println!(
        "  last poll 8 days ago:           {}",
        gate(catalog_gate(&state, now, &GatePolicy::default()))
    );
    let mut recent = state.clone();
    recent.last_catalog_poll_at = Some((now - Duration::days(2)).into());
    println!(
        "  last poll 2 days ago:           {}",
        gate(catalog_gate(&recent, now, &GatePolicy::default()))
    );
    println!(
        "  last poll 2 days ago, forced:   {}",
        gate(catalog_gate(&recent, now, &GatePolicy::forced()))
    );
    println!(
        "  never polled:                   {}",
        gate(catalog_gate(
            &SyncState::default(),
            now,
            &GatePolicy::default()
        ))
    );

    // 2. Eligibility: does this table need a sync?
    let previous = state.tables.get(&table);
    let decision = eligibility(previous, &entry.updated, !local.is_empty());
    println!(
        "\n== eligibility of {table} (catalog updated {})",
        entry.updated
    );
    println!("  state says 2024-10-10T08:00:00, partitions on disk: {decision:?}");
    let unchanged = TableState {
        last_seen_updated: Some(entry.updated.clone()),
        ..TableState::default()
    };
    println!(
        "  state says {}, partitions on disk:   {:?}",
        entry.updated,
        eligibility(Some(&unchanged), &entry.updated, true)
    );
    println!(
        "  state says {}, no partitions:        {:?}",
        entry.updated,
        eligibility(Some(&unchanged), &entry.updated, false)
    );
    let Eligibility::Sync { bootstrap } = decision else {
        println!("  nothing to do");
        return Ok(());
    };

    // 3. Frequency and refresh window, from the remote period codes.
    let frequency = infer_frequency(&remote);
    println!(
        "\n== frequency of {table}: {frequency} (last code {}), refresh window {} periods",
        remote.last().map(Tid::as_str).unwrap_or("-"),
        frequency.refresh_window()
    );

    // 4. Period selection: new ∪ refresh window, and what was pruned.
    let selection = select_periods(
        &remote,
        &local,
        frequency,
        SelectOptions {
            bootstrap,
            prune: true,
        },
    );
    println!(
        "\n== period selection ({} remote, {} local, bootstrap {bootstrap})",
        remote.len(),
        local.len()
    );
    println!("  new      {}", list(&selection.new_periods));
    println!("  refresh  {}", list(&selection.refresh_periods));
    println!("  fetch    {}", list(&selection.fetch));
    println!(
        "  deleted  {}  (only reported with pruning on)",
        list(&selection.deleted)
    );

    // 5. Batch sizing: periods per BULK request from the value counts.
    let counts = info.value_counts();
    let rows = estimate_rows_per_period(&counts, remote.len());
    println!("\n== requests (value counts {counts:?} → about {rows} rows per period)");
    for budget in [MAX_ROWS_PER_CALL, 2_000] {
        let per = periods_per_request(rows, budget);
        let plan = batches(&selection.fetch, per);
        println!(
            "  at most {budget} rows per call: {per} periods per request, {} requests",
            plan.len()
        );
        for (i, b) in plan.iter().enumerate() {
            println!("    request {}: {}", i + 1, list(b));
        }
    }

    // 6. The bootstrap plan of every table in the catalog (first run).
    println!("\n== bootstrap plan of the catalog (empty state)");
    println!(
        "  {:<9} {:<11} {:>7} {:>9} {:>8} {:>8}",
        "table", "frequency", "periods", "rows/per", "per req", "requests"
    );
    let empty = SyncState::default();
    let (mut total_periods, mut total_requests) = (0, 0);
    for e in catalog.tables.iter().take(12) {
        let Some((id, plan)) = bootstrap_plan(&client, &empty, e).await? else {
            continue;
        };
        println!(
            "  {:<9} {:<11} {:>7} {:>9} {:>8} {:>8}",
            id.as_str(),
            plan.frequency.as_str(),
            plan.periods,
            plan.rows_per_period,
            plan.per_request,
            plan.requests
        );
        total_periods += plan.periods;
        total_requests += plan.requests;
    }
    println!("  total: {total_periods} periods in {total_requests} requests");

    if let Some(emu) = emulator {
        emu.shutdown().await;
    }
    Ok(())
}

struct Plan {
    frequency: sync_state::Frequency,
    periods: usize,
    rows_per_period: u64,
    per_request: usize,
    requests: usize,
}

/// The plan of a first sync of one catalog table.
async fn bootstrap_plan(
    client: &StatbankClient,
    state: &SyncState,
    entry: &CatalogEntry,
) -> Result<Option<(TableId, Plan)>> {
    let id = entry.table_id()?;
    let Eligibility::Sync { bootstrap } = eligibility(state.tables.get(&id), &entry.updated, false)
    else {
        return Ok(None);
    };
    let (info, _) = client.table_info(&id).await?;
    let remote = info.tids()?;
    let frequency = infer_frequency(&remote);
    let selection = select_periods(
        &remote,
        &BTreeSet::new(),
        frequency,
        SelectOptions {
            bootstrap,
            prune: false,
        },
    );
    let rows_per_period = estimate_rows_per_period(&info.value_counts(), remote.len());
    let per_request = periods_per_request(rows_per_period, MAX_ROWS_PER_CALL);
    let requests = batches(&selection.fetch, per_request).len();
    Ok(Some((
        id,
        Plan {
            frequency,
            periods: selection.fetch.len(),
            rows_per_period,
            per_request,
            requests,
        },
    )))
}

fn gate(d: GateDecision) -> String {
    match d {
        GateDecision::Poll => "poll the catalog".into(),
        GateDecision::PollClockSkew {
            last_catalog_poll_at,
        } => format!("poll the catalog (last poll {last_catalog_poll_at} is in the future)"),
        GateDecision::Skip {
            last_catalog_poll_at,
        } => format!("skip (polled at {last_catalog_poll_at})"),
    }
}

fn list(tids: &[Tid]) -> String {
    let codes: Vec<&str> = tids.iter().map(Tid::as_str).collect();
    let n = match codes.len() {
        1 => "1 period ".to_string(),
        n => format!("{n} periods"),
    };
    if codes.len() > 8 {
        format!(
            "{n} [{} … {}]",
            codes[..3].join(", "),
            codes[codes.len() - 3..].join(", ")
        )
    } else {
        format!("{n} [{}]", codes.join(", "))
    }
}
