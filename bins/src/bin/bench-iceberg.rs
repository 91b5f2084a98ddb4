//! `bench-iceberg`: what `--iceberg` costs per cycle.
//!
//! ```text
//! cargo run --release -p bins --features bench --bin bench-iceberg -- \
//!     [--quarters 10] [--cycles 5] [--revised 2] [--catalog [--baseline]] [--s3-bucket B]
//! ```
//!
//! Two cases, from the emulator on loopback, into a local folder or (with
//! `STATBANK_TEST_S3_ENDPOINT` set, credentials from `AWS_ACCESS_KEY_ID` /
//! `AWS_SECRET_ACCESS_KEY`) an S3 bucket:
//!
//! - **large**: a FOLK1A-shaped table of `--quarters` quarters (200,025
//!   rows each: 2 M rows at 10), vintages kept, bootstrapped and then put
//!   through `--cycles` weekly cycles that each revise `--revised` quarters,
//!   every cycle with `--iceberg`. The metadata step,
//!   [`PartitionStore::write_iceberg`] as the cycle runs it, is timed from
//!   its `iceberg_metadata` span against the rest of the cycle, with the
//!   requests it sends to the object store (the only table: nothing else
//!   sends any meanwhile), the footers it reads and the bytes of metadata
//!   it writes.
//! - **catalog** (`--catalog`): the real catalog's 2,339 tables, tiny, one
//!   bootstrap cycle with `--iceberg` on: the metadata step of every table
//!   as the cycle runs it (each timed from its `iceberg_metadata` span, with
//!   the footers it read and the bytes it wrote), against that cycle. Then,
//!   on the same folder, the metadata written afresh for every table as a
//!   cycle that turns `--iceberg` on over an existing mirror does (a
//!   one-time cost: every footer is read), and a regeneration of every
//!   table with nothing changed (what a cycle does when the state says a
//!   table's metadata is behind but its files are as described). With
//!   `--baseline`, the same bootstrap without `--iceberg` into another
//!   folder first: the two cycles side by side. The steps' spans overlap
//!   the other table the cycle syncs at the same time, so their sum is an
//!   upper bound; the difference of the two cycles is the cost a user
//!   sees (as noisy as the cycles).
//!
//! Figures are medians with the spread (min–max) over the cycles.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use clap::Parser;
use partition_store::{IcebergOptions, PartitionStore};
use statbank_client::emulator::{Emulator, World};
use statbank_client::StatbankClient;
use sync_state::{utc_to_source_time, DataDir, RunStatus, Storage, SyncState, TableId};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::Event;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Debug, Parser)]
#[command(name = "bench-iceberg")]
struct Args {
    /// Quarters of the large table (200,025 rows each).
    #[arg(long, default_value_t = 10)]
    quarters: usize,
    /// Weekly cycles after the bootstrap.
    #[arg(long, default_value_t = 5)]
    cycles: usize,
    /// Quarters revised per cycle (within the 8-quarter refresh window).
    #[arg(long, default_value_t = 2)]
    revised: usize,
    /// Also run the catalog case (2,339 tiny tables).
    #[arg(long)]
    catalog: bool,
    /// In the catalog case, also bootstrap a second folder without
    /// `--iceberg`, to set the two cycles side by side.
    #[arg(long)]
    baseline: bool,
    /// An S3 endpoint: the data folders go to this bucket.
    #[arg(long, env = "STATBANK_TEST_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// The bucket for the S3 case.
    #[arg(long, default_value = "statbank-test")]
    s3_bucket: String,
}

use bins::bench::folk1a::TABLE;

fn main() -> Result<()> {
    let args = Args::parse();
    let steps = StepTotals::default();
    // Only the metadata steps' spans and their outcome events reach it.
    let only_steps = filter_fn(|m| {
        m.name() == bins::ICEBERG_METADATA_SPAN
            || (m.is_event() && m.target().ends_with("cycle::iceberg"))
    });
    tracing_subscriber::registry()
        .with(steps.clone().with_filter(only_steps))
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(&args, &steps))
}

/// A fresh data folder named `name`: local, or in the S3 bucket.
fn data_dir(args: &Args, tmp: &std::path::Path, name: &str) -> Result<DataDir> {
    Ok(match &args.s3_endpoint {
        Some(endpoint) => {
            let url = format!(
                "s3://{}/bench-iceberg-{name}-{}",
                args.s3_bucket,
                std::process::id()
            );
            let options = [
                ("aws_endpoint".to_string(), endpoint.clone()),
                ("aws_allow_http".to_string(), "true".to_string()),
            ];
            DataDir::open_with(&url, &options)?
        }
        None => DataDir::local(tmp.join(name)),
    })
}

async fn cycle(
    client: &StatbankClient,
    data: &DataDir,
    i: usize,
    iceberg: bins::IcebergMetadata,
) -> Result<(f64, usize)> {
    let mut opts = bins::SyncOptions::on(data.clone());
    opts.gate.force = true;
    opts.vintages = bins::Vintages::Keep;
    opts.verify.cycles = 0;
    opts.iceberg = iceberg;
    opts.clock = bins::Clock::fixed(bins::bench::week(i));
    let t = Instant::now();
    let m = bins::run_sync_cycle(client, &opts).await?;
    let secs = t.elapsed().as_secs_f64();
    ensure!(
        m.status == RunStatus::Success,
        "cycle {i}: {} {:?}",
        m.status,
        m.error
    );
    let changed = m.tables.values().map(|r| r.changed_tids.len()).sum();
    Ok((secs, changed))
}

/// One `write_iceberg` over `tables`: seconds, object-store requests,
/// bytes written, versions written.
#[derive(Debug, Default, Clone, Copy)]
struct Step {
    secs: f64,
    requests: u64,
    bytes: u64,
    written: usize,
}

fn iceberg_step(data: &DataDir, tables: &[(TableId, String)], i: usize) -> Result<Step> {
    let store = PartitionStore::new(data);
    let opts = IcebergOptions::at(bins::bench::week(i).timestamp_millis());
    let before = data.storage().requests();
    let t = Instant::now();
    let mut step = Step::default();
    for (table, updated) in tables {
        let o = store.write_iceberg(table, updated, &opts)?;
        step.bytes += o.bytes_written;
        step.written += usize::from(o.written);
    }
    step.secs = t.elapsed().as_secs_f64();
    step.requests = data.storage().requests() - before;
    Ok(step)
}

/// Every table of the state with the `updated` it is synced at.
fn synced_tables(data: &DataDir) -> Result<Vec<(TableId, String)>> {
    let state = SyncState::load(data)?;
    Ok(state
        .tables
        .into_iter()
        .filter_map(|(id, t)| t.last_seen_updated.map(|u| (id, u)))
        .collect())
}

async fn large(args: &Args, tmp: &std::path::Path, steps_seen: &StepTotals) -> Result<()> {
    let quarters: Vec<String> = (0..args.quarters)
        .map(|i| format!("{}K{}", 2015 + i / 4, i % 4 + 1))
        .collect();
    let emu = Emulator::start(bins::bench::folk1a_world(&quarters)).await?;
    let client = StatbankClient::builder()
        .base_url(emu.base_url())
        .min_interval(Duration::ZERO)
        .build()?;
    let data = data_dir(args, tmp, "large")?;
    steps_seen.watch(data.storage().clone());
    let h = emu.handle();
    let (mut cycles, mut steps) = (Vec::new(), Vec::new());
    for i in 0..=args.cycles {
        if i > 0 {
            for k in 0..args.revised {
                let back = (i * args.revised + k) % 8;
                h.revise_period(TABLE, &quarters[quarters.len() - 1 - back]);
            }
        }
        h.set_updated(
            TABLE,
            &utc_to_source_time(bins::bench::week(i) - chrono::Duration::hours(2)),
        );
        let (secs, changed) = cycle(&client, &data, i, bins::IcebergMetadata::Write).await?;
        let expected = if i == 0 { quarters.len() } else { args.revised };
        ensure!(changed == expected, "cycle {i}: {changed} changed periods");
        let step = steps_seen.take();
        ensure!(step.written == 1, "cycle {i}: one new metadata version");
        // The cycle without its metadata step: what --iceberg adds to.
        let without = secs - step.secs;
        println!(
            "large cycle {i}: cycle {secs:.3} s, of which iceberg step {:.4} s ({:.2} % of the rest), {} store requests, {} footers read, {} bytes of metadata",
            step.secs,
            100.0 * step.secs / without,
            step.requests,
            step.footers_read,
            step.bytes
        );
        if i > 0 {
            cycles.push(without);
            steps.push(step);
        }
    }
    emu.shutdown().await;
    let share: Vec<f64> = cycles
        .iter()
        .zip(&steps)
        .map(|(c, s)| 100.0 * s.secs / c)
        .collect();
    let f = |g: fn(&InCycle) -> f64| steps.iter().map(g).collect::<Vec<f64>>();
    println!(
        "large ({} rows, {} quarters, {} revised per cycle, {} cycles, {}): cycle without the step {}, iceberg step {}, share {}, store requests {}, footers read {}, metadata bytes {}",
        args.quarters * 200_025,
        args.quarters,
        args.revised,
        args.cycles,
        data.storage().describe(),
        bins::bench::spread(&cycles, "s", 3),
        bins::bench::spread(&f(|s| s.secs), "s", 4),
        bins::bench::spread(&share, "%", 2),
        bins::bench::spread(&f(|s| s.requests as f64), "", 0),
        bins::bench::spread(&f(|s| s.footers_read as f64), "", 0),
        bins::bench::spread(&f(|s| s.bytes as f64), "B", 0),
    );
    Ok(())
}

async fn catalog(args: &Args, tmp: &std::path::Path, steps: &StepTotals) -> Result<()> {
    let emu = Emulator::start(World::full_catalog()).await?;
    let client = StatbankClient::builder()
        .base_url(emu.base_url())
        .min_interval(Duration::ZERO)
        .build()?;
    let baseline = match args.baseline {
        true => {
            let plain = data_dir(args, tmp, "catalog-plain")?;
            Some(
                cycle(&client, &plain, 0, bins::IcebergMetadata::AsRecorded)
                    .await?
                    .0,
            )
        }
        false => None,
    };
    let data = data_dir(args, tmp, "catalog")?;
    steps.watch(data.storage().clone());
    let (secs, _) = cycle(&client, &data, 0, bins::IcebergMetadata::Write).await?;
    emu.shutdown().await;
    if let Some(plain) = baseline {
        println!(
            "catalog: bootstrap cycle without --iceberg {plain:.2} s, with {secs:.2} s: {:+.2} s ({:+.1} %)",
            secs - plain,
            100.0 * (secs - plain) / plain
        );
    }
    let in_cycle = steps.take();
    let tables = synced_tables(&data)?;
    ensure!(
        in_cycle.written == tables.len(),
        "every table gets its metadata in the cycle ({} of {})",
        in_cycle.written,
        tables.len()
    );
    println!(
        "catalog ({} tables, {}): bootstrap cycle with --iceberg {secs:.2} s; its metadata steps {:.2} s ({:.1} % of the cycle), {} footers read, {} bytes, at most {} store requests (those of the table synced beside it included)",
        tables.len(),
        data.storage().describe(),
        in_cycle.secs,
        100.0 * in_cycle.secs / secs,
        in_cycle.footers_read,
        in_cycle.bytes,
        in_cycle.requests,
    );
    let store = PartitionStore::new(&data);
    for (table, _) in &tables {
        store.remove_iceberg(table)?;
    }
    let first = iceberg_step(&data, &tables, 0)?;
    ensure!(
        first.written == tables.len(),
        "every table gets its metadata"
    );
    let again = iceberg_step(&data, &tables, 0)?;
    ensure!(again.written == 0, "nothing changed, nothing written");
    println!(
        "catalog: --iceberg turned on over the existing mirror (once) {:.2} s ({:.1} % of the cycle), {} store requests, {} bytes; regenerated unchanged {:.2} s ({:.1} %), {} store requests, 0 bytes",
        first.secs,
        100.0 * first.secs / secs,
        first.requests,
        first.bytes,
        again.secs,
        100.0 * again.secs / secs,
        again.requests
    );
    Ok(())
}

/// The metadata steps a cycle ran, summed from their spans and events.
#[derive(Debug, Default, Clone, Copy)]
struct InCycle {
    secs: f64,
    requests: u64,
    footers_read: u64,
    bytes: u64,
    written: usize,
}

/// Sums the cycle's `iceberg_metadata` spans (wall time, and the store's
/// request counter across each) and the outcome events within.
#[derive(Clone, Default)]
struct StepTotals {
    storage: Arc<Mutex<Option<Storage>>>,
    totals: Arc<Mutex<InCycle>>,
}

impl StepTotals {
    fn watch(&self, storage: Storage) {
        *lock(&self.storage) = Some(storage);
    }

    fn take(&self) -> InCycle {
        std::mem::take(&mut *lock(&self.totals))
    }

    fn requests(&self) -> u64 {
        lock(&self.storage).as_ref().map_or(0, Storage::requests)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// When a step's span opened.
struct Opened {
    at: Instant,
    requests: u64,
}

impl<S> Layer<S> for StepTotals
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != bins::ICEBERG_METADATA_SPAN {
            return;
        }
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Opened {
                at: Instant::now(),
                requests: self.requests(),
            });
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let extensions = span.extensions();
        if let Some(o) = extensions.get::<Opened>() {
            let mut t = lock(&self.totals);
            t.secs += o.at.elapsed().as_secs_f64();
            t.requests += self.requests().saturating_sub(o.requests);
        }
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut v = Outcome::default();
        event.record(&mut v);
        if v.message {
            let mut t = lock(&self.totals);
            t.footers_read += v.footers_read;
            t.bytes += v.bytes;
            t.written += usize::from(v.written);
        }
    }
}

/// The fields of the cycle's "iceberg metadata" event.
#[derive(Default)]
struct Outcome {
    message: bool,
    footers_read: u64,
    bytes: u64,
    written: bool,
}

impl Visit for Outcome {
    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "footers_read" => self.footers_read = value,
            "bytes" => self.bytes = value,
            _ => {}
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "written" {
            self.written = value;
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}") == "iceberg metadata";
        }
    }
}

async fn run(args: &Args, steps: &StepTotals) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    large(args, tmp.path(), steps).await?;
    if args.catalog {
        catalog(args, tmp.path(), steps).await?;
    }
    Ok(())
}
