//! One BULK request: download on the async side, parse and stage partitions
//! on a blocking thread, joined by a bounded channel so download, parse and
//! Parquet encoding overlap while memory stays bounded.

use bytes::Bytes;
use partition_store::{PartitionMeta, RequestWriter, StagedRequest, TableSet, WriteLimits};
use statbank_client::{BulkParser, DataRequest, Lang, StatbankClient, TableInfo, VALUE_COLUMN};
use sync_state::{TableId, Tid};

use crate::Error;

/// Body chunks buffered between the download and the parser.
const CHANNEL_CHUNKS: usize = 16;

enum Msg {
    Chunk(Bytes),
    End,
}

/// Where a request failed: only failures while the body streamed are worth
/// repeating the whole request for (the head was already retried).
pub(crate) enum FetchError {
    Body(Error),
    Other(Error),
}

impl FetchError {
    pub(crate) fn into_inner(self) -> Error {
        match self {
            FetchError::Body(e) | FetchError::Other(e) => e,
        }
    }
}

/// What the parser saw besides the staged partitions.
pub(crate) struct Fetched {
    pub(crate) staged: StagedRequest,
    pub(crate) bytes: u64,
}

/// One BULK request's work: which periods of which set, with which limits
/// and footer metadata, and the header the body must have.
#[derive(Clone)]
pub(crate) struct FetchJob {
    /// The set the periods are staged into.
    pub(crate) set: TableSet,
    /// The periods requested.
    pub(crate) tids: Vec<Tid>,
    /// Guards against a runaway response.
    pub(crate) limits: WriteLimits,
    /// What every staged file's footer records.
    pub(crate) meta: PartitionMeta,
    /// The header the body must have: the tableinfo's variable ids
    /// upper-cased, then `INDHOLD`.
    pub(crate) header: Vec<String>,
}

impl FetchJob {
    /// The job of fetching `tids` of `info`'s table into `set`.
    pub(crate) fn new(
        set: &TableSet,
        info: &TableInfo,
        tids: &[Tid],
        limits: WriteLimits,
        meta: &PartitionMeta,
    ) -> FetchJob {
        FetchJob {
            set: set.clone(),
            tids: tids.to_vec(),
            limits,
            meta: meta.clone(),
            header: info
                .variables
                .iter()
                .map(|v| v.id.to_uppercase())
                .chain([VALUE_COLUMN.to_string()])
                .collect(),
        }
    }
}

/// Fetches the job's periods in one BULK request and stages one partition
/// per period. Nothing is published; a failure at any point leaves no file.
pub(crate) async fn fetch_batch(
    client: &StatbankClient,
    info: &TableInfo,
    job: &FetchJob,
) -> Result<Fetched, FetchError> {
    let table = job.set.table();
    let req = DataRequest::all_values_for_periods(table.clone(), info, &job.tids);
    let mut resp = client
        .data_bulk(&req)
        .await
        .map_err(|e| FetchError::Other(e.into()))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Msg>(CHANNEL_CHUNKS);
    let worker = {
        let (job, lang) = (job.clone(), resp.lang());
        tokio::task::spawn_blocking(move || write_worker(&job, lang, rx))
    };
    let mut body_err = None;
    loop {
        match resp.next_chunk().await {
            Ok(Some(b)) => {
                sync_state::crash::point("bulk body chunk received");
                if tx.send(Msg::Chunk(b)).await.is_err() {
                    break; // the worker stopped on an error: it reports it
                }
            }
            Ok(None) => {
                let _ = tx.send(Msg::End).await;
                break;
            }
            Err(e) => {
                body_err = Some(e);
                break;
            }
        }
    }
    let bytes = resp.received();
    drop(tx);
    drop(resp);
    let result = worker
        .await
        .map_err(|e| FetchError::Other(Error::Internal(format!("parse task failed: {e}"))))?;
    if let Some(e) = body_err {
        return Err(FetchError::Body(e.into()));
    }
    match result {
        Ok(staged) => Ok(Fetched { staged, bytes }),
        Err(e @ Error::Client(statbank_client::Error::Truncated { .. })) => {
            Err(FetchError::Body(e))
        }
        Err(e) => Err(FetchError::Other(e)),
    }
}

/// Parsed batches buffered between the parser and the Parquet writer, and
/// their size: enough to keep both threads busy, small enough that memory
/// does not depend on the response (about 1 MiB per batch of a
/// FOLK1A-shaped table).
const BATCH_QUEUE: usize = 4;
const PARSE_BATCH_ROWS: usize = 32 * 1024;

enum WriterMsg {
    Schema(arrow_schema::SchemaRef),
    Batch(arrow_array::RecordBatch),
    /// The body was parsed completely: finish the staged files.
    Done,
}

/// Parses on this thread and encodes Parquet on a second one, so the two
/// halves of the CPU work overlap (they are about equal). Both queues are
/// bounded, so memory does not grow with the response.
fn write_worker(
    job: &FetchJob,
    lang: Lang,
    rx: tokio::sync::mpsc::Receiver<Msg>,
) -> Result<StagedRequest, Error> {
    let table = job.set.table();
    std::thread::scope(|scope| {
        let (wtx, wrx) = std::sync::mpsc::sync_channel::<WriterMsg>(BATCH_QUEUE);
        let writer = scope.spawn(move || writer_thread(job, wrx));
        let parsed = parse_loop(table, &job.tids, job.limits, lang, rx, &wtx);
        if parsed.is_ok() {
            // A send error means the writer failed: its error is reported below.
            let _ = wtx.send(WriterMsg::Done);
        }
        drop(wtx);
        let written = writer.join().map_err(|_| {
            Error::Internal(format!("table {table}: parquet writer thread panicked"))
        })?;
        match (parsed, written) {
            (Ok(()), Ok(Some(staged))) => Ok(staged),
            (Ok(()), Ok(None)) => Err(Error::Internal(format!(
                "table {table}: the parquet writer stopped early"
            ))),
            // A writer error explains a failed hand-over; otherwise the
            // parser's error is the cause.
            (Err(Error::Internal(_)), Err(w)) => Err(w),
            (Err(p), _) => Err(p),
            (Ok(()), Err(w)) => Err(w),
        }
    })
}

fn parse_loop(
    table: &TableId,
    tids: &[Tid],
    limits: WriteLimits,
    lang: Lang,
    mut rx: tokio::sync::mpsc::Receiver<Msg>,
    wtx: &std::sync::mpsc::SyncSender<WriterMsg>,
) -> Result<(), Error> {
    let handover = || Error::Internal(format!("table {table}: parquet writer stopped"));
    let mut parser = BulkParser::new(table.as_str(), lang)
        .with_batch_rows(PARSE_BATCH_ROWS)
        .with_max_rows(limits.max_rows_per_period.saturating_mul(tids.len() as u64));
    let mut batches = Vec::new();
    let mut schema_sent = false;
    let mut ended = false;
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Msg::Chunk(b) => parser.push(&b, &mut batches)?,
            Msg::End => {
                ended = true;
                break;
            }
        }
        if !schema_sent {
            if let Some(schema) = parser.schema() {
                wtx.send(WriterMsg::Schema(schema))
                    .map_err(|_| handover())?;
                schema_sent = true;
            }
        }
        for b in batches.drain(..) {
            wtx.send(WriterMsg::Batch(b)).map_err(|_| handover())?;
        }
    }
    if !ended {
        // The download failed; the writer drops its staged files.
        return Err(Error::Interrupted);
    }
    let summary = parser.finish(&mut batches)?;
    if !schema_sent {
        wtx.send(WriterMsg::Schema(summary.schema))
            .map_err(|_| handover())?;
    }
    for b in batches.drain(..) {
        wtx.send(WriterMsg::Batch(b)).map_err(|_| handover())?;
    }
    Ok(())
}

/// Returns the staged request after `Done`, `None` when the parser gave up
/// (the staged files are removed when the writer is dropped).
fn writer_thread(
    job: &FetchJob,
    rx: std::sync::mpsc::Receiver<WriterMsg>,
) -> Result<Option<StagedRequest>, Error> {
    let table = job.set.table();
    let mut writer: Option<RequestWriter> = None;
    for msg in rx {
        match msg {
            WriterMsg::Schema(schema) => {
                writer = Some(new_writer(job, schema)?);
            }
            WriterMsg::Batch(b) => match writer.as_mut() {
                Some(w) => w.write(&b)?,
                None => {
                    return Err(Error::Internal(format!(
                        "table {table}: rows before the header"
                    )))
                }
            },
            WriterMsg::Done => {
                let Some(w) = writer.take() else {
                    return Err(Error::Internal(format!("table {table}: no header")));
                };
                return Ok(Some(w.finish()?));
            }
        }
    }
    Ok(None)
}

fn new_writer(job: &FetchJob, schema: arrow_schema::SchemaRef) -> Result<RequestWriter, Error> {
    let got: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    if got != job.header {
        return Err(Error::Shape {
            table: job.set.table().to_string(),
            message: format!(
                "bulk header {} does not match the tableinfo variables {}",
                got.join(";"),
                job.header.join(";")
            ),
        });
    }
    Ok(RequestWriter::new(
        &job.set,
        schema,
        &job.tids,
        job.limits,
        job.meta.clone(),
    )?)
}
