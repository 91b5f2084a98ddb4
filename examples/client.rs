//! The typed StatBank client on its own: read the catalog, read one table's
//! metadata, stream a BULK download chunk by chunk through the push parser
//! into Arrow record batches, and handle a typed API error.
//!
//! Run it against an in-process emulator (started by the example):
//!
//! ```text
//! cargo run -p examples --example client
//! ```
//!
//! or against any StatBank-compatible API, e.g. the live one (the example
//! then downloads the latest two quarters of FOLK1A, about 400,000 rows):
//!
//! ```text
//! cargo run -p examples --example client -- https://api.statbank.dk/v1
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use arrow_array::{Array, Float64Array, RecordBatch, StringArray};
use statbank_client::emulator::{Emulator, World};
use statbank_client::{
    BulkParser, DataRequest, Error, StatbankClient, TableId, TableInfoExt, TablesRequest, Tid,
    VALUE_COLUMN,
};

/// Rows per record batch handed on by the parser: memory stays bounded by
/// one batch, however large the response is.
const BATCH_ROWS: usize = 16 * 1024;

#[tokio::main]
async fn main() -> Result<()> {
    // The API to talk to: the first argument, or a fresh emulator.
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
    // Be polite to a real server (the default is 250 ms between request
    // starts); the local emulator needs no pause.
    let min_interval = if emulator.is_some() {
        Duration::ZERO
    } else {
        Duration::from_millis(250)
    };
    let client = StatbankClient::builder()
        .base_url(&base_url)
        .min_interval(min_interval)
        .max_concurrent(2)
        .max_retries(3)
        .request_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(30))
        .build()
        .with_context(|| format!("building a client for {base_url}"))?;

    // 1. The catalog (/v1/tables).
    let catalog = client.tables(&TablesRequest::default()).await?;
    println!("\n== catalog: {} tables", catalog.len());
    for entry in catalog.tables.iter().take(12) {
        println!(
            "  {:<9} updated {}  periods {} .. {}  {}",
            entry.id,
            entry.updated,
            entry.first_period.as_deref().unwrap_or("?"),
            entry.latest_period.as_deref().unwrap_or("?"),
            shorten(&entry.text, 48)
        );
    }
    if catalog.len() > 12 {
        println!("  … and {} more", catalog.len() - 12);
    }

    // 2. One table's metadata (/v1/tableinfo), decoded plus the raw JSON.
    let table = TableId::new("FOLK1A")?;
    let (info, raw) = client.table_info(&table).await?;
    println!(
        "\n== tableinfo {}: {:?} ({} bytes of JSON, unit {:?}, updated {})",
        info.id,
        info.text,
        raw.len(),
        info.unit,
        info.updated.as_deref().unwrap_or("?")
    );
    for var in &info.variables {
        let first: Vec<&str> = var.values.iter().take(4).map(|v| v.id.as_str()).collect();
        println!(
            "  {:<11} {:>4} values{}  e.g. {}",
            var.id,
            var.values.len(),
            if var.time { " (time)" } else { "" },
            first.join(", ")
        );
    }
    let tids = info.tids()?;
    let wanted: Vec<Tid> = tids[tids.len().saturating_sub(2)..].to_vec();

    // 3. A streamed BULK download of the latest two periods (/v1/data),
    //    every other variable `*`, fed chunk by chunk into the push parser.
    let request = DataRequest::all_values_for_periods(table.clone(), &info, &wanted);
    let started = Instant::now();
    let mut body = client.data_bulk(&request).await?;
    let mut parser: BulkParser = body.parser().with_batch_rows(BATCH_ROWS);
    let mut out: Vec<RecordBatch> = Vec::new();
    let mut stats = Tally::default();
    while let Some(chunk) = body.next_chunk().await? {
        stats.chunks += 1;
        parser.push(&chunk, &mut out)?;
        // Hand each complete batch on (here: count it) and let it go.
        for batch in out.drain(..) {
            stats.add(&batch)?;
        }
    }
    let summary = parser.finish(&mut out)?;
    for batch in out.drain(..) {
        stats.add(&batch)?;
    }
    let columns: Vec<&str> = summary
        .schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    println!(
        "\n== data {} for {}: {} rows, {} bytes in {} chunks -> {} record batches, {:.2?}",
        table,
        wanted
            .iter()
            .map(Tid::as_str)
            .collect::<Vec<_>>()
            .join(", "),
        summary.rows,
        summary.bytes,
        stats.chunks,
        stats.batches,
        started.elapsed()
    );
    println!("  columns: {}", columns.join(";"));
    for (tid, (rows, missing, total)) in &stats.per_period {
        println!(
            "  {tid}: {rows} rows, {missing} missing values (..), sum of {VALUE_COLUMN} {total:.0}"
        );
    }

    // 4. A typed API error: a period that does not exist.
    let bogus = Tid::new("1901K1")?;
    let request = DataRequest::all_values_for_periods(table.clone(), &info, &[bogus]);
    println!("\n== data {table} for 1901K1 (a period that does not exist)");
    match client.data_bulk(&request).await {
        Ok(_) => bail!("expected an API error for an unknown period"),
        Err(Error::Api {
            code,
            status,
            message,
            ..
        }) => {
            // 4xx API errors are final: the client did not retry them.
            println!("  API error {code} (http {status}): {message}");
        }
        Err(other) => return Err(other).context("unexpected kind of error"),
    }

    let s = client.stats();
    println!(
        "\nclient stats: {} requests, {} retries, {} body bytes",
        s.requests, s.retries, s.bytes
    );
    if let Some(emu) = emulator {
        emu.shutdown().await;
    }
    Ok(())
}

/// What the batches of one download contained.
#[derive(Default)]
struct Tally {
    chunks: u64,
    batches: u64,
    /// Per period: rows, missing values, sum of the values.
    per_period: BTreeMap<String, (u64, u64, f64)>,
}

impl Tally {
    fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        self.batches += 1;
        let tid = batch
            .column_by_name("TID")
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            .context("BULK batch without a TID string column")?;
        let value = batch
            .column_by_name(VALUE_COLUMN)
            .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
            .context("BULK batch without a numeric INDHOLD column")?;
        for i in 0..batch.num_rows() {
            let e = self.per_period.entry(tid.value(i).to_string()).or_default();
            e.0 += 1;
            if value.is_null(i) {
                e.1 += 1;
            } else {
                e.2 += value.value(i);
            }
        }
        Ok(())
    }
}

fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    let mut t: String = s.chars().take(n - 1).collect();
    t.push('…');
    t
}
