//! One partition file being written: a temp file in the table folder, fed in
//! fixed-size chunks so the bytes do not depend on how rows were batched.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;
use tempfile::{NamedTempFile, TempPath};

use crate::digest::ContentHasher;
use crate::{
    Error, PartitionMeta, DIGEST_KEY, ROWS_KEY, VALID_FROM_KEY, VALUE_COLUMN, VARIABLES_KEY,
};

/// The writer's mini-batch size: every write hands it one chunk of at most
/// this many rows (the remainder waits for the next batch), so page
/// boundaries, and therefore the file's bytes, depend only on the rows and
/// never on the incoming batch sizes.
const CHUNK_ROWS: usize = 1024;
/// A chunk also ends before the row that would take its field bytes past
/// this (a chunk of one wider row is allowed), so wide rows do not make
/// chunks large. Decided row by row: still independent of batching.
const CHUNK_BYTES: usize = 1 << 20;
/// The row group in progress is written out once the writer holds this
/// much memory for it (checked after every chunk: deterministic too), so a
/// period of wide rows is not held whole. Normal periods (a few MiB of
/// codes at most) stay one row group.
const ROW_GROUP_BYTES: usize = 16 << 20;

pub(crate) fn writer_properties(schema: &SchemaRef) -> WriterProperties {
    // Version 1.0 data pages, PLAIN values, no dictionary: what every engine
    // reads with its default settings (Spark 3.5's vectorized reader rejects
    // BYTE_STREAM_SPLIT; dictionaries made files larger and slower to write
    // on this data).
    let mut b = WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_dictionary_enabled(false)
        // Min/max of the code columns cost a comparison per value and prune
        // nothing (every code occurs in the file's one row group); `TID`
        // and `INDHOLD` keep theirs.
        .set_statistics_enabled(EnabledStatistics::None)
        .set_write_batch_size(CHUNK_ROWS)
        .set_created_by(format!(
            "statbank-sync version {} (parquet-rs)",
            env!("CARGO_PKG_VERSION")
        ));
    if schema.field_with_name(VALUE_COLUMN).is_ok() {
        b = b.set_column_statistics_enabled(
            ColumnPath::from(VALUE_COLUMN),
            EnabledStatistics::Chunk,
        );
    }
    if schema.field_with_name(crate::TIME_COLUMN).is_ok() {
        b = b.set_column_statistics_enabled(
            ColumnPath::from(crate::TIME_COLUMN),
            EnabledStatistics::Chunk,
        );
    }
    if let Ok(level) = ZstdLevel::try_new(1) {
        b = b.set_compression(Compression::ZSTD(level));
    }
    b.build()
}

impl PartitionMeta {
    fn key_values(&self) -> Vec<KeyValue> {
        let mut out = Vec::new();
        if let Some(v) = &self.variables {
            if let Ok(json) = serde_json::to_string(v) {
                out.push(KeyValue::new(VARIABLES_KEY.to_string(), json));
            }
        }
        if let Some(v) = &self.valid_from {
            out.push(KeyValue::new(VALID_FROM_KEY.to_string(), v.clone()));
        }
        out
    }
}

/// A staged partition file: complete and fsynced, not yet renamed into place.
pub(crate) struct StagedFile {
    /// The file, closed (a request of thousands of periods holds no open
    /// descriptors), removed when dropped unless published.
    pub(crate) temp: TempPath,
    pub(crate) rows: u64,
    pub(crate) digest: String,
    /// Its size in bytes.
    pub(crate) size: u64,
    /// Its column names, in order.
    pub(crate) columns: Vec<String>,
    /// The validity start written in its footer.
    pub(crate) valid_from: Option<String>,
}

pub(crate) struct PartitionFileWriter {
    writer: ArrowWriter<File>,
    temp_path: PathBuf,
    temp: NamedTempFile,
    hasher: ContentHasher,
    carry: Vec<RecordBatch>,
    carry_rows: usize,
    carry_bytes: usize,
    rows: u64,
    schema: SchemaRef,
    meta: Vec<KeyValue>,
    /// The schema's column names (the digest's, and the staged file's).
    columns: Vec<String>,
    valid_from: Option<String>,
}

impl PartitionFileWriter {
    pub(crate) fn create(
        dir: &Path,
        schema: &SchemaRef,
        meta: &PartitionMeta,
    ) -> Result<PartitionFileWriter, Error> {
        let temp = tempfile::Builder::new()
            .prefix(sync_state::TEMP_PREFIX)
            .suffix(".parquet.tmp")
            .tempfile_in(dir)
            .map_err(|e| Error::io(dir, e))?;
        let temp_path = temp.path().to_path_buf();
        let file = temp.reopen().map_err(|e| Error::io(&temp_path, e))?;
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(writer_properties(schema)))
            .map_err(|e| Error::parquet(&temp_path, e))?;
        let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        Ok(PartitionFileWriter {
            writer,
            temp_path,
            temp,
            hasher: ContentHasher::new(columns.clone()),
            columns,
            carry: Vec::new(),
            carry_rows: 0,
            carry_bytes: 0,
            rows: 0,
            schema: schema.clone(),
            meta: meta.key_values(),
            valid_from: meta.valid_from.clone(),
        })
    }

    pub(crate) fn rows(&self) -> u64 {
        self.rows + self.carry_rows as u64
    }

    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<(), Error> {
        self.hasher.update(batch);
        let n = batch.num_rows();
        let mut offset = 0;
        while offset < n {
            let room = (CHUNK_ROWS - self.carry_rows).min(n - offset);
            let take = self.rows_that_fit(batch, offset, room);
            if take == 0 {
                // The next row does not fit: the chunk is complete.
                self.flush_carry()?;
                continue;
            }
            let part = batch.slice(offset, take);
            offset += take;
            let full = self.carry_rows + take == CHUNK_ROWS;
            if self.carry_rows == 0 && full {
                self.write_chunk(&part)?;
                continue;
            }
            self.carry_bytes += field_bytes(&part, 0, take);
            self.carry_rows += take;
            self.carry.push(part);
            if full || (offset < n && take < room) {
                self.flush_carry()?;
            }
        }
        Ok(())
    }

    /// How many of the `room` rows of `batch` from `offset` fit in the
    /// chunk being filled: all of them unless their field bytes would take
    /// it past [`CHUNK_BYTES`]; an empty chunk always takes one row.
    fn rows_that_fit(&self, batch: &RecordBatch, offset: usize, room: usize) -> usize {
        let budget = CHUNK_BYTES.saturating_sub(self.carry_bytes);
        if field_bytes(batch, offset, offset + room) <= budget {
            return room;
        }
        // Bytes grow with rows: the largest prefix that fits.
        let (mut lo, mut hi) = (0, room);
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if field_bytes(batch, offset, offset + mid) <= budget {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        if lo == 0 && self.carry_rows == 0 {
            1
        } else {
            lo
        }
    }

    fn flush_carry(&mut self) -> Result<(), Error> {
        if self.carry_rows == 0 {
            return Ok(());
        }
        let merged = arrow_select::concat::concat_batches(&self.schema, &self.carry)
            .map_err(|e| Error::arrow(&self.temp_path, e))?;
        self.carry.clear();
        self.carry_rows = 0;
        self.carry_bytes = 0;
        self.write_chunk(&merged)
    }

    /// Writes one chunk; ends the row group once it holds
    /// [`ROW_GROUP_BYTES`].
    fn write_chunk(&mut self, batch: &RecordBatch) -> Result<(), Error> {
        self.rows += batch.num_rows() as u64;
        self.writer
            .write(batch)
            .map_err(|e| Error::parquet(&self.temp_path, e))?;
        if self.writer.memory_size() >= ROW_GROUP_BYTES {
            self.writer
                .flush()
                .map_err(|e| Error::parquet(&self.temp_path, e))?;
        }
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Result<StagedFile, Error> {
        self.flush_carry()?;
        let digest = self.hasher.finish();
        self.writer
            .append_key_value_metadata(KeyValue::new(DIGEST_KEY.to_string(), digest.clone()));
        self.writer
            .append_key_value_metadata(KeyValue::new(ROWS_KEY.to_string(), self.rows.to_string()));
        for kv in std::mem::take(&mut self.meta) {
            self.writer.append_key_value_metadata(kv);
        }
        let file = self
            .writer
            .into_inner()
            .map_err(|e| Error::parquet(&self.temp_path, e))?;
        file.sync_all().map_err(|e| Error::io(&self.temp_path, e))?;
        let size = file
            .metadata()
            .map_err(|e| Error::io(&self.temp_path, e))?
            .len();
        Ok(StagedFile {
            size,
            temp: self.temp.into_temp_path(),
            rows: self.rows,
            digest,
            columns: self.columns,
            valid_from: self.valid_from,
        })
    }
}

/// The field bytes of rows `start..end` of `batch`: the string columns'
/// value bytes, 8 per number.
pub(crate) fn field_bytes(batch: &RecordBatch, start: usize, end: usize) -> usize {
    use arrow_array::Array;
    batch
        .columns()
        .iter()
        .map(
            |c| match c.as_any().downcast_ref::<arrow_array::StringArray>() {
                Some(s) => {
                    let o = s.value_offsets();
                    usize::try_from(o[end] - o[start]).unwrap_or(0)
                }
                None => (end - start) * 8,
            },
        )
        .sum()
}

/// Renames a complete staged file to a local `path` (mode 0644) and fsyncs
/// its folder: for exports outside the data folder.
pub(crate) fn persist_local(staged: StagedFile, path: &Path) -> Result<(), Error> {
    Ok(sync_state::fsio::persist(staged.temp, path)?)
}
