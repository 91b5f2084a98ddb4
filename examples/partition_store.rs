//! The partition store on its own: stage a downloaded response as one
//! Parquet file per period with a `RequestWriter`, compare it with what is
//! stored, publish it atomically, see that re-publishing identical content
//! writes nothing, write a partition in one shot, and list, inspect and read
//! partitions back.
//!
//! ```text
//! cargo run -p examples --example partition_store
//! cargo run -p examples --example partition_store -- https://api.statbank.dk/v1
//! ```
//!
//! Without an argument the example starts an in-process emulator and
//! downloads SCENE01A (theatre seasons such as `2021/2022`, which shows how
//! period codes are quoted in file names). Everything is written to a
//! temporary folder that is removed at the end.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use arrow_array::{Array, Float64Array, RecordBatch, StringArray};
use partition_store::{
    partition_schema, PartitionMeta, PartitionStore, PublishOptions, RequestWriter, WriteLimits,
};
use statbank_client::emulator::{Emulator, World};
use statbank_client::{DataRequest, StatbankClient, TableId, TableInfoExt, Tid};
use sync_state::DataDir;

/// A downloaded BULK response: its batches and the periods asked for.
struct Download {
    table: TableId,
    requested: Vec<Tid>,
    batches: Vec<RecordBatch>,
}

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

    // The source of the data: the last three periods of a small table. (The
    // sync itself streams batches into the writer as they are parsed; this
    // table is small enough to hold in memory.)
    let download = download(&client, &TableId::new("SCENE01A")?, 3).await?;
    if let Some(emu) = emulator {
        emu.shutdown().await;
    }

    // The store does blocking file I/O (fsync and all): keep it off the
    // async worker threads.
    let dir = tempfile::tempdir().context("creating a temp folder")?;
    let data = DataDir::local(dir.path());
    tokio::task::spawn_blocking(move || store_demo(PartitionStore::new(&data), &download))
        .await
        .context("the store task panicked")??;
    drop(dir);
    Ok(())
}

async fn download(client: &StatbankClient, table: &TableId, last: usize) -> Result<Download> {
    let (info, _) = client.table_info(table).await?;
    let tids = info.tids()?;
    let requested = tids[tids.len().saturating_sub(last)..].to_vec();
    let req = DataRequest::all_values_for_periods(table.clone(), &info, &requested);
    let mut body = client.data_bulk(&req).await?;
    let mut parser = body.parser();
    let mut batches = Vec::new();
    while let Some(chunk) = body.next_chunk().await? {
        parser.push(&chunk, &mut batches)?;
    }
    let summary = parser.finish(&mut batches)?;
    println!(
        "downloaded {table} {}: {} rows in {} batches",
        list(&requested),
        summary.rows,
        batches.len()
    );
    Ok(Download {
        table: table.clone(),
        requested,
        batches,
    })
}

fn store_demo(store: PartitionStore, d: &Download) -> Result<()> {
    let schema = d
        .batches
        .first()
        .map(RecordBatch::schema)
        .context("the response had no rows")?;

    // 1. Stage the response: one temp Parquet file per period, nothing
    //    visible yet. Then compare with the stored footers and publish.
    println!(
        "\n== first publish of {} into {}",
        d.table,
        store.data_dir().describe()
    );
    let set = store.current_set(&d.table);
    let meta = PartitionMeta::default();
    let outcome = {
        let mut w = RequestWriter::new(
            &set,
            schema.clone(),
            &d.requested,
            WriteLimits::default(),
            meta.clone(),
        )?;
        for b in &d.batches {
            w.write(b)?;
        }
        let staged = w.finish()?;
        let comparison = staged.compare();
        for p in &comparison {
            println!(
                "  staged {:<10} {:>4} rows  {}",
                p.tid.as_str(),
                p.rows,
                if p.unchanged { "unchanged" } else { "changed" }
            );
        }
        // A sync records the changed periods in its journal here, before
        // the renames, so a crash cannot hide a change from the DB apply.
        staged.publish(&comparison, &PublishOptions::default())?
    };
    println!(
        "  published: changed {:?}, unchanged {:?}",
        outcome.changed, outcome.unchanged
    );
    ensure!(outcome.changed.len() == d.requested.len());

    // 2. The same content again: every digest matches, no file is rewritten.
    println!("\n== second publish of identical content");
    let mut w = RequestWriter::new(&set, schema, &d.requested, WriteLimits::default(), meta)?;
    for b in &d.batches {
        w.write(b)?;
    }
    let staged = w.finish()?;
    let comparison = staged.compare();
    let outcome = staged.publish(&comparison, &PublishOptions::default())?;
    println!(
        "  published: changed {:?}, unchanged {:?}",
        outcome.changed, outcome.unchanged
    );
    ensure!(
        outcome.changed.is_empty(),
        "identical content was rewritten"
    );

    // 3. A one-shot write of hand-made data (tools, tests, corrections).
    let own = TableId::new("MYTABLE1")?;
    let schema = partition_schema(&["OMRÅDE", "TID", "INDHOLD"]);
    println!("\n== one-shot writes of {own}");
    for (tid, values) in [
        ("2024K1", [Some(5_961_249.0), Some(1_873_458.0), None]),
        ("2024K2", [Some(5_965_990.0), Some(1_876_611.0), Some(3.5)]),
    ] {
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["000", "084", "101"])),
                Arc::new(StringArray::from(vec![tid; 3])),
                Arc::new(Float64Array::from(values.to_vec())),
            ],
        )?;
        let info =
            store.write_partition(&own, &Tid::new(tid)?, &[batch], &PartitionMeta::default())?;
        println!(
            "  wrote {} ({} rows, digest {})",
            info.key, info.rows, info.digest
        );
    }

    // 4. What is stored: tables, periods, file names, footers, data.
    println!("\n== stored partitions");
    for table in store.list_tables()? {
        let tids = store.list_tids(&table)?;
        println!("  {table}: {} periods", tids.len());
        for tid in &tids {
            let key = store.partition_key(&table, tid);
            let footer = store.footer(&table, tid)?;
            println!(
                "    {:<10} file {:<22} rows {:>4}  columns {}  digest {}",
                tid.as_str(),
                key.rsplit('/').next().unwrap_or_default(),
                footer.rows,
                footer.columns.join(";"),
                footer.digest.as_deref().unwrap_or("-")
            );
        }
    }

    // Read one partition back as Arrow batches (streamed, 16 Ki rows each).
    let tid = d.requested.last().context("no period requested")?;
    let reader = store.read_partition(&d.table, tid)?;
    println!(
        "\n== read back {} {} ({} rows from the footer)",
        d.table,
        tid.as_str(),
        reader.num_rows()
    );
    let (mut rows, mut nulls, mut sum) = (0usize, 0usize, 0.0f64);
    let mut shown = 0;
    for batch in reader {
        let batch = batch?;
        rows += batch.num_rows();
        let value = batch
            .column_by_name("INDHOLD")
            .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
            .context("no INDHOLD column")?;
        nulls += value.null_count();
        sum += value.iter().flatten().sum::<f64>();
        for i in 0..batch.num_rows().min(4 - shown) {
            let cells: Vec<String> = batch
                .columns()
                .iter()
                .map(|c| cell(c.as_ref(), i))
                .collect();
            println!("  {}", cells.join(";"));
            shown += 1;
        }
    }
    println!("  … {rows} rows, {nulls} missing values, sum of INDHOLD {sum:.0}");

    // Pruning a period that disappeared at the source removes its file.
    let gone = Tid::new("2024K1")?;
    let removed = store.remove_partition(&own, &gone)?;
    println!(
        "\nremoved {own} {}: {removed}; {own} now has {}",
        gone.as_str(),
        list(&store.list_tids(&own)?.into_iter().collect::<Vec<_>>())
    );
    Ok(())
}

fn cell(col: &dyn Array, i: usize) -> String {
    if col.is_null(i) {
        return "..".into();
    }
    if let Some(s) = col.as_any().downcast_ref::<StringArray>() {
        return s.value(i).to_string();
    }
    if let Some(f) = col.as_any().downcast_ref::<Float64Array>() {
        return f.value(i).to_string();
    }
    "?".into()
}

fn list(tids: &[Tid]) -> String {
    let codes: Vec<&str> = tids.iter().map(Tid::as_str).collect();
    format!("[{}]", codes.join(", "))
}
