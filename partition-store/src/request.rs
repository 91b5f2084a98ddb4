//! Splitting one request's stream of batches into staged partitions, and
//! publishing them only once the whole response was read.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::PathBuf;

use arrow_array::{Array, RecordBatch, StringArray, UInt32Array};
use arrow_ipc::reader::FileReader;
use arrow_ipc::writer::FileWriter;
use arrow_schema::SchemaRef;
use sync_state::{TableId, Tid};
use tempfile::NamedTempFile;

use crate::file_writer::{PartitionFileWriter, StagedFile};
use crate::publish::{PublishOptions, TableSet};
use crate::store::read_footer;
use crate::{Error, PartitionFooter, PartitionMeta, TIME_COLUMN};
use sync_state::TEMP_PREFIX;

/// Limits that guard against a hostile or runaway response.
#[derive(Debug, Clone, Copy)]
pub struct WriteLimits {
    /// Most rows one period may have.
    pub max_rows_per_period: u64,
}

impl Default for WriteLimits {
    fn default() -> Self {
        WriteLimits {
            max_rows_per_period: 500_000_000,
        }
    }
}

/// Receives the record batches of one BULK request and stages one partition
/// file per period, with memory bounded by one open Parquet writer.
///
/// Periods normally arrive time-outermost: one writer is open at a time and
/// finished when `TID` changes. If a period comes back after its writer was
/// finished (interleaved output), the writer switches to a spill file (Arrow
/// IPC, rows grouped by period per batch) and rebuilds those partitions in
/// [`RequestWriter::finish`]. Nothing is visible to readers until
/// [`StagedRequest::publish`].
pub struct RequestWriter {
    set: TableSet,
    table: TableId,
    dir: PathBuf,
    meta: PartitionMeta,
    schema: SchemaRef,
    tid_col: usize,
    requested: HashSet<Tid>,
    limits: WriteLimits,
    current: Option<(Tid, PartitionFileWriter)>,
    finished: BTreeMap<Tid, StagedFile>,
    order: Vec<Tid>,
    spill: Option<Spill>,
}

/// The spill of an interleaved response: rows gathered in `pending` (up to
/// [`SPILL_ROWS`] rows or [`SPILL_BYTES`] bytes), then written as one Arrow
/// IPC block per period, so blocks stay large whatever the interleaving.
struct Spill {
    writer: FileWriter<File>,
    temp: NamedTempFile,
    path: PathBuf,
    index: HashMap<Tid, Vec<usize>>,
    rows: HashMap<Tid, u64>,
    blocks: usize,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    pending_bytes: usize,
}

/// Rows gathered before a spill writes them out, one block per period.
const SPILL_ROWS: usize = 128 * 1024;
/// Bytes gathered before a spill writes them out.
const SPILL_BYTES: usize = 4 << 20;

impl RequestWriter {
    /// Starts a request for `requested` periods of the set `set` (a table's
    /// current partitions, or a new set being built aside). `schema` is the
    /// partition schema (see [`crate::partition_schema`]) and must contain
    /// `TID`; `meta` goes into every file's footer.
    pub fn new(
        set: &TableSet,
        schema: SchemaRef,
        requested: &[Tid],
        limits: WriteLimits,
        meta: PartitionMeta,
    ) -> Result<RequestWriter, Error> {
        let table = set.table();
        let tid_col = schema.index_of(TIME_COLUMN).map_err(|_| Error::Schema {
            table: table.clone(),
            message: format!(
                "response has no {TIME_COLUMN} column (columns: {})",
                schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(";")
            ),
        })?;
        let dir = set.scratch_dir()?;
        Ok(RequestWriter {
            set: set.clone(),
            table: table.clone(),
            dir,
            meta,
            schema,
            tid_col,
            requested: requested.iter().cloned().collect(),
            limits,
            current: None,
            finished: BTreeMap::new(),
            order: Vec::new(),
            spill: None,
        })
    }

    /// Adds one batch of rows (any mix of periods).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), Error> {
        if batch.schema().fields() != self.schema.fields() {
            return Err(Error::Schema {
                table: self.table.clone(),
                message: "batch schema differs from the request's schema".into(),
            });
        }
        if self.spill.is_some() {
            return self.spill_batch(batch);
        }
        let tids = batch
            .column(self.tid_col)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| Error::Schema {
                table: self.table.clone(),
                message: format!("{TIME_COLUMN} column is not a string column"),
            })?
            .clone();
        let n = batch.num_rows();
        let mut start = 0;
        // A batch of one period (the parser never lets a batch span two)
        // is recognised by two vectorised passes instead of a comparison
        // per row.
        let uniform = one_value(&tids);
        while start < n {
            let code = tids.value(start);
            let mut end = if uniform { n } else { start + 1 };
            while end < n && tids.value(end) == code {
                end += 1;
            }
            let same = self
                .current
                .as_ref()
                .is_some_and(|(t, _)| t.as_str() == code);
            if !same {
                let tid = self.check_tid(code)?;
                if self.finished.contains_key(&tid) {
                    // Interleaved output: spill the rest of the request.
                    self.start_spill()?;
                    return self.spill_batch(&batch.slice(start, n - start));
                }
                self.close_current()?;
                let w = PartitionFileWriter::create(&self.dir, &self.schema, &self.meta)?;
                self.order.push(tid.clone());
                self.current = Some((tid, w));
            }
            if let Some((tid, w)) = self.current.as_mut() {
                w.write(&batch.slice(start, end - start))?;
                if w.rows() > self.limits.max_rows_per_period {
                    return Err(Error::TooManyRows {
                        table: self.table.clone(),
                        tid: tid.clone(),
                        limit: self.limits.max_rows_per_period,
                    });
                }
            }
            start = end;
        }
        Ok(())
    }

    fn check_tid(&self, code: &str) -> Result<Tid, Error> {
        check_tid(&self.table, &self.requested, code)
    }

    fn close_current(&mut self) -> Result<(), Error> {
        if let Some((tid, w)) = self.current.take() {
            let staged = w.finish()?;
            self.finished.insert(tid, staged);
        }
        Ok(())
    }

    fn start_spill(&mut self) -> Result<(), Error> {
        self.close_current()?;
        let temp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .suffix(".spill.tmp")
            .tempfile_in(&self.dir)
            .map_err(|e| Error::io(&self.dir, e))?;
        let path = temp.path().to_path_buf();
        let file = temp.reopen().map_err(|e| Error::io(&path, e))?;
        let writer = FileWriter::try_new(file, &self.schema).map_err(|e| Error::arrow(&path, e))?;
        self.spill = Some(Spill {
            writer,
            temp,
            path,
            index: HashMap::new(),
            rows: HashMap::new(),
            blocks: 0,
            pending: Vec::new(),
            pending_rows: 0,
            pending_bytes: 0,
        });
        Ok(())
    }

    fn spill_batch(&mut self, batch: &RecordBatch) -> Result<(), Error> {
        let Some(spill) = self.spill.as_mut() else {
            return Ok(());
        };
        spill.pending_rows += batch.num_rows();
        spill.pending_bytes += crate::file_writer::field_bytes(batch, 0, batch.num_rows());
        spill.pending.push(batch.clone());
        if spill.pending_rows >= SPILL_ROWS || spill.pending_bytes >= SPILL_BYTES {
            self.flush_spill()?;
        }
        Ok(())
    }

    /// Writes the gathered rows out, one block per period (arrival order
    /// kept within each).
    fn flush_spill(&mut self) -> Result<(), Error> {
        let Some(spill) = self.spill.as_mut() else {
            return Ok(());
        };
        if spill.pending.is_empty() {
            return Ok(());
        }
        let batch = arrow_select::concat::concat_batches(&self.schema, &spill.pending)
            .map_err(|e| Error::arrow(&spill.path, e))?;
        spill.pending.clear();
        spill.pending_rows = 0;
        spill.pending_bytes = 0;
        let tids = batch
            .column(self.tid_col)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| Error::Schema {
                table: self.table.clone(),
                message: format!("{TIME_COLUMN} column is not a string column"),
            })?
            .clone();
        // Group the rows by period, keeping arrival order within each.
        let mut groups: Vec<(Tid, Vec<u32>)> = Vec::new();
        let mut slot: HashMap<&str, usize> = HashMap::new();
        for i in 0..batch.num_rows() {
            let code = tids.value(i);
            let g = match slot.get(code) {
                Some(g) => *g,
                None => {
                    let tid = check_tid(&self.table, &self.requested, code)?;
                    groups.push((tid, Vec::new()));
                    slot.insert(code, groups.len() - 1);
                    groups.len() - 1
                }
            };
            groups[g].1.push(i as u32);
        }
        for (tid, idx) in groups {
            let indices = UInt32Array::from(idx);
            let columns = batch
                .columns()
                .iter()
                .map(|c| arrow_select::take::take(c.as_ref(), &indices, None))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::arrow(&spill.path, e))?;
            let part = RecordBatch::try_new(self.schema.clone(), columns)
                .map_err(|e| Error::arrow(&spill.path, e))?;
            spill
                .writer
                .write(&part)
                .map_err(|e| Error::arrow(&spill.path, e))?;
            let rows = spill.rows.entry(tid.clone()).or_insert(0);
            *rows += part.num_rows() as u64;
            let before = self.finished.get(&tid).map_or(0, |s| s.rows);
            if *rows + before > self.limits.max_rows_per_period {
                return Err(Error::TooManyRows {
                    table: self.table.clone(),
                    tid,
                    limit: self.limits.max_rows_per_period,
                });
            }
            if !spill.index.contains_key(&tid) && !self.finished.contains_key(&tid) {
                self.order.push(tid.clone());
            }
            spill.index.entry(tid).or_default().push(spill.blocks);
            spill.blocks += 1;
        }
        Ok(())
    }

    /// Ends the request after the response was read completely: finishes the
    /// open writer, rebuilds spilled periods, and stages an empty partition
    /// for every requested period that returned no rows. Nothing is published
    /// yet. Dropping the writer instead discards every staged file.
    pub fn finish(mut self) -> Result<StagedRequest, Error> {
        self.close_current()?;
        self.flush_spill()?;
        if let Some(mut spill) = self.spill.take() {
            spill
                .writer
                .finish()
                .map_err(|e| Error::arrow(&spill.path, e))?;
            let file = spill.temp.reopen().map_err(|e| Error::io(&spill.path, e))?;
            let mut reader =
                FileReader::try_new(file, None).map_err(|e| Error::arrow(&spill.path, e))?;
            let mut spilled: Vec<(Tid, Vec<usize>)> = spill.index.into_iter().collect();
            spilled.sort();
            for (tid, blocks) in spilled {
                let mut w = PartitionFileWriter::create(&self.dir, &self.schema, &self.meta)?;
                if let Some(earlier) = self.finished.remove(&tid) {
                    let r = crate::store::PartitionReader::open(
                        File::open(&earlier.temp).map_err(|e| Error::io(&*earlier.temp, e))?,
                        earlier.temp.display().to_string(),
                        crate::READ_BATCH_ROWS,
                    )?;
                    for b in r {
                        w.write(&b?)?;
                    }
                }
                for block in blocks {
                    reader
                        .set_index(block)
                        .map_err(|e| Error::arrow(&spill.path, e))?;
                    if let Some(b) = reader.next() {
                        w.write(&b.map_err(|e| Error::arrow(&spill.path, e))?)?;
                    }
                }
                self.finished.insert(tid, w.finish()?);
            }
        }
        let mut requested: Vec<Tid> = self.requested.iter().cloned().collect();
        requested.sort();
        for tid in requested {
            if !self.finished.contains_key(&tid) {
                let w = PartitionFileWriter::create(&self.dir, &self.schema, &self.meta)?;
                self.finished.insert(tid.clone(), w.finish()?);
                self.order.push(tid);
            }
        }
        let mut parts = Vec::with_capacity(self.order.len());
        for tid in self.order {
            if let Some(staged) = self.finished.remove(&tid) {
                parts.push((tid, staged));
            }
        }
        Ok(StagedRequest {
            set: self.set,
            parts,
        })
    }
}

/// `code` as a period of `table` that the request asked for.
fn check_tid(table: &TableId, requested: &HashSet<Tid>, code: &str) -> Result<Tid, Error> {
    let tid = Tid::new(code).map_err(|source| Error::BadTid {
        table: table.clone(),
        source,
    })?;
    if !requested.contains(&tid) {
        return Err(Error::UnexpectedTid {
            table: table.clone(),
            tid: sync_state_truncate(code),
        });
    }
    Ok(tid)
}

/// Whether every value of `a` is the same (no nulls): all lengths equal,
/// and the value bytes repeat with that period.
fn one_value(a: &StringArray) -> bool {
    let n = a.len();
    if n == 0 || a.null_count() > 0 {
        return false;
    }
    let offs = a.value_offsets();
    let len = offs[1] - offs[0];
    if offs.windows(2).any(|w| w[1] - w[0] != len) {
        return false;
    }
    let (Ok(start), Ok(end), Ok(len)) = (
        usize::try_from(offs[0]),
        usize::try_from(offs[n]),
        usize::try_from(len),
    ) else {
        return false;
    };
    let bytes = &a.value_data()[start..end];
    bytes.len() < len || bytes[len..] == bytes[..bytes.len() - len]
}

fn sync_state_truncate(s: &str) -> String {
    if s.chars().count() > 80 {
        let mut t: String = s.chars().take(80).collect();
        t.push('…');
        t
    } else {
        s.to_string()
    }
}

/// Every partition of one request, staged as fsynced temp files, waiting to be
/// published. Dropping it deletes the temp files.
pub struct StagedRequest {
    set: TableSet,
    parts: Vec<(Tid, StagedFile)>,
}

/// A staged period and whether publishing it changes what is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedPeriod {
    /// The period.
    pub tid: Tid,
    /// Rows in the new file.
    pub rows: u64,
    /// `true` when the stored partition already has this exact content.
    pub unchanged: bool,
    /// The footer of the partition it replaces, when there is one.
    pub previous: Option<PartitionFooter>,
}

/// The result of publishing a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishOutcome {
    /// Periods whose file was written (new or different content), with rows.
    pub changed: Vec<(Tid, u64)>,
    /// Periods whose stored partition already had the same content.
    pub unchanged: Vec<Tid>,
}

impl StagedRequest {
    /// The table.
    pub fn table(&self) -> &TableId {
        self.set.table()
    }

    /// Compares each staged period with the stored partition's footer digest.
    /// A stored file without a digest (written by another tool) or that
    /// cannot be read counts as changed.
    pub fn compare(&self) -> Vec<StagedPeriod> {
        let storage = self.set.storage();
        self.parts
            .iter()
            .map(|(tid, staged)| {
                let previous = read_footer(storage, &self.set.key(tid)).ok().flatten();
                let unchanged = previous
                    .as_ref()
                    .and_then(|f| f.digest.as_deref())
                    .is_some_and(|d| d == staged.digest);
                StagedPeriod {
                    tid: tid.clone(),
                    rows: staged.rows,
                    unchanged,
                    previous,
                }
            })
            .collect()
    }

    /// Publishes every changed period (unchanged ones are dropped): each
    /// becomes visible whole, by rename locally or by a completed upload on
    /// an object store. With vintages on, the partition each one replaces
    /// is kept first under `_vintages/` (journaled, so that a crash never
    /// leaves a vintage without the partition that superseded it). `comparison`
    /// is the result of [`StagedRequest::compare`]; callers record the
    /// changed periods in their journal between the two calls.
    pub fn publish(
        self,
        comparison: &[StagedPeriod],
        opts: &PublishOptions,
    ) -> Result<PublishOutcome, Error> {
        let unchanged: HashSet<&Tid> = comparison
            .iter()
            .filter(|p| p.unchanged)
            .map(|p| &p.tid)
            .collect();
        let mut out = PublishOutcome::default();
        let mut files = Vec::new();
        for (tid, staged) in self.parts {
            if unchanged.contains(&tid) {
                out.unchanged.push(tid);
                continue;
            }
            let digest = staged.digest.clone();
            out.changed.push((tid.clone(), staged.rows));
            files.push((tid, staged, digest));
        }
        crate::publish::publish_files(&self.set, files, comparison, opts)?;
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) fn one_value_for_tests(a: &StringArray) -> bool {
    one_value(a)
}
