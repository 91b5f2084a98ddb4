//! Sync one table into Parquet partitions, then apply the run's changed
//! periods into Postgres with `fact_apply::apply_run`: the fact table is
//! created from the partitions (inferred column types, indexes), a dry run
//! reports what a re-apply would delete and insert, and a real re-apply of
//! the same run shows that applying is idempotent.
//!
//! Needs a Postgres server; everything happens in a scratch schema
//! (`example_fact_<pid>`) that is dropped at the end:
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo run -p examples --example fact_apply
//! ```
//!
//! The data come from an in-process emulator, or from the API whose base
//! URL is given as the first argument (`-- https://api.statbank.dk/v1`).
//!
//! The synchronous `postgres` client must not run on a tokio worker thread
//! (it starts its own runtime and panics there). So `main` is synchronous: it
//! builds a runtime for the download, drops it, then does the database work
//! on the main thread.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use bins::redact::DatabaseUrl;
use bins::{run_sync_cycle, SyncOptions};
use fact_apply::postgres::{Client, NoTls};
use fact_apply::{apply_run, ApplyOptions};
use statbank_client::emulator::{Emulator, World};
use statbank_client::StatbankClient;
use sync_state::{DataDir, DbApplyReport, RunId, RunManifest, RunStatus, TableId};

/// The table synced and applied (yearly, 1993–2024 in the emulator).
const TABLE: &str = "BIL10";

fn main() -> ExitCode {
    let Ok(database_url) = std::env::var("DATABASE_URL") else {
        eprintln!(
            "DATABASE_URL is not set: this example applies data into Postgres.\n\
             Run it as\n  \
             DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo run -p examples --example fact_apply"
        );
        return ExitCode::from(2);
    };
    match run(&database_url, std::env::args().nth(1)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(database_url: &str, base_url: Option<String>) -> Result<()> {
    let data = tempfile::tempdir().context("creating a temp data folder")?;
    let table = TableId::new(TABLE)?;

    // 1. The sync, on a runtime of its own that is gone before the DB work.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let manifest = rt.block_on(sync_once(base_url, data.path(), &table))?;
    drop(rt);
    let synced = manifest
        .tables
        .get(&table)
        .with_context(|| format!("{table} missing from the manifest"))?;
    println!(
        "sync run {}: {} — {table}: {} changed periods, {} rows in {} files",
        manifest.run_id,
        manifest.status,
        synced.changed_tids.len(),
        synced.rows_written.unwrap_or(0),
        synced.files_written.unwrap_or(0)
    );
    ensure!(
        manifest.status == RunStatus::Success,
        "the sync did not succeed: {:?}",
        synced.error
    );

    // 2. The DB apply, synchronous, on this (non-tokio) thread.
    let mut db = Client::connect(database_url, NoTls)
        .with_context(|| format!("connecting to {}", DatabaseUrl::new(database_url)))?;
    println!("connected to {}", DatabaseUrl::new(database_url));
    let schema = format!("example_fact_{}", std::process::id());
    db.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
        .with_context(|| format!("creating schema {schema}"))?;
    let dir = DataDir::local(data.path());
    let outcome = apply(&mut db, &dir, &manifest.run_id, &schema, &table);
    // Clean up whatever happened above.
    let dropped = db
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .with_context(|| format!("dropping schema {schema}"));
    outcome?;
    dropped?;
    println!("\ndropped scratch schema {schema}");
    Ok(())
}

/// One forced sync cycle of `table` into `data`.
async fn sync_once(base_url: Option<String>, data: &Path, table: &TableId) -> Result<RunManifest> {
    let (emulator, base_url) = match base_url {
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
    let mut opts = SyncOptions::new(data)?;
    opts.gate.force = true;
    opts.tables = Some(vec![table.clone()]);
    let manifest = run_sync_cycle(&client, &opts).await?;
    if let Some(emu) = emulator {
        emu.shutdown().await;
    }
    Ok(manifest)
}

fn apply(db: &mut Client, dir: &DataDir, run: &RunId, schema: &str, table: &TableId) -> Result<()> {
    let target = format!("\"{schema}\".\"{}\"", table.fact_table_name());

    // a) First apply: the table does not exist yet; create it from the
    //    partitions and load them.
    let opts = ApplyOptions {
        create_missing: true,
        schema: schema.to_string(),
        ..ApplyOptions::default()
    };
    let report = apply_run(db, dir, run, &opts)?;
    print_report("apply (create_missing)", &report);
    ensure!(report.status == RunStatus::Success, "apply failed");
    println!("  rows in {target}: {}", count(db, &target)?);
    println!("  columns of {target}:");
    for row in db.query(
        "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
         WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        &[&target],
    )? {
        let (name, ty): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        println!("    {name:<10} {ty}");
    }
    for row in db.query(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = $2 ORDER BY indexname",
        &[&schema, &table.fact_table_name()],
    )? {
        let def: String = row.try_get(0)?;
        println!("    index: {def}");
    }

    // b) Dry run: what applying the run again would do, changing nothing.
    let dry = ApplyOptions {
        dry_run: true,
        ..opts.clone()
    };
    let report = apply_run(db, dir, run, &dry)?;
    print_report("dry run of a re-apply", &report);

    // c) Apply the same run again: delete + insert of the same periods in one
    //    transaction per table; the table ends up the same.
    let before = count(db, &target)?;
    let report = apply_run(db, dir, run, &opts)?;
    print_report("re-apply", &report);
    let after = count(db, &target)?;
    println!("  rows in {target}: {before} before, {after} after");
    ensure!(before == after, "re-applying changed the row count");

    // The manifest now records the (last real) apply.
    let manifest = RunManifest::load(dir, run)?;
    if let Some(a) = &manifest.db_apply {
        println!(
            "\nmanifest {run}: db_apply status {}, {} of {} tables applied",
            a.status, a.summary.tables_applied, a.summary.tables_total
        );
    }
    Ok(())
}

fn count(db: &mut Client, target: &str) -> Result<i64> {
    let row = db.query_one(&format!("SELECT count(*) FROM {target}"), &[])?;
    Ok(row.try_get(0)?)
}

fn print_report(title: &str, r: &DbApplyReport) {
    println!(
        "\n== {title}: {} ({} applied, {} skipped, {} failed)",
        r.status, r.summary.tables_applied, r.summary.tables_skipped, r.summary.tables_failed
    );
    for t in r.tables.iter().flatten() {
        println!(
            "  {} {:?}{}: {} periods, deleted {} rows, inserted {} rows, dropped {} rows with missing values",
            t.table,
            t.status,
            if t.created == Some(true) { " (created)" } else { "" },
            t.changed_tids.len(),
            t.deleted_rows.unwrap_or(0),
            t.inserted_rows.unwrap_or(0),
            t.dropped_null_rows.unwrap_or(0)
        );
        if let Some(reason) = &t.reason {
            println!("    reason: {reason}");
        }
        if let Some(error) = &t.error {
            println!("    error: {error}");
        }
        if let Some(periods) = &t.periods {
            let last: Vec<String> = periods
                .iter()
                .rev()
                .take(3)
                .map(|(tid, c)| format!("{tid}: -{} +{}", c.deleted, c.inserted))
                .collect();
            println!("    latest periods: {}", last.join(", "));
        }
    }
}
