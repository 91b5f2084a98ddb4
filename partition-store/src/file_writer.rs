//! One partition file being written: a temp file in the table folder, fed in
//! fixed-size chunks so the bytes do not depend on how rows were batched.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use tempfile::{NamedTempFile, TempPath};

use crate::digest::ContentHasher;
use crate::{
    Error, PartitionMeta, DIGEST_KEY, ROWS_KEY, TEMP_PREFIX, VALID_FROM_KEY, VALUE_COLUMN,
    VARIABLES_KEY,
};

/// The writer's mini-batch size: every write hands it a multiple of this
/// many rows (the remainder waits for the next batch), so page boundaries,
/// and therefore the file's bytes, depend only on the rows and never on the
/// incoming batch sizes.
const CHUNK_ROWS: usize = 1024;

pub(crate) fn writer_properties(schema: &SchemaRef) -> WriterProperties {
    let mut b = WriterProperties::builder()
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
        b = b
            .set_column_encoding(ColumnPath::from(VALUE_COLUMN), Encoding::BYTE_STREAM_SPLIT)
            .set_column_statistics_enabled(
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
}

pub(crate) struct PartitionFileWriter {
    writer: ArrowWriter<File>,
    temp_path: PathBuf,
    temp: NamedTempFile,
    hasher: ContentHasher,
    carry: Vec<RecordBatch>,
    carry_rows: usize,
    rows: u64,
    schema: SchemaRef,
    meta: Vec<KeyValue>,
}

impl PartitionFileWriter {
    pub(crate) fn create(
        dir: &Path,
        schema: &SchemaRef,
        meta: &PartitionMeta,
    ) -> Result<PartitionFileWriter, Error> {
        let temp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .suffix(".parquet.tmp")
            .tempfile_in(dir)
            .map_err(|e| Error::io(dir, e))?;
        let temp_path = temp.path().to_path_buf();
        let file = temp.reopen().map_err(|e| Error::io(&temp_path, e))?;
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(writer_properties(schema)))
            .map_err(|e| Error::parquet(&temp_path, e))?;
        let names = schema.fields().iter().map(|f| f.name().clone()).collect();
        Ok(PartitionFileWriter {
            writer,
            temp_path,
            temp,
            hasher: ContentHasher::new(names),
            carry: Vec::new(),
            carry_rows: 0,
            rows: 0,
            schema: schema.clone(),
            meta: meta.key_values(),
        })
    }

    pub(crate) fn rows(&self) -> u64 {
        self.rows + self.carry_rows as u64
    }

    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<(), Error> {
        self.hasher.update(batch);
        let mut offset = 0;
        let n = batch.num_rows();
        if self.carry_rows > 0 {
            let take = (CHUNK_ROWS - self.carry_rows).min(n);
            self.carry.push(batch.slice(0, take));
            self.carry_rows += take;
            offset = take;
            if self.carry_rows == CHUNK_ROWS {
                self.flush_carry()?;
            }
        }
        let whole = (n - offset) / CHUNK_ROWS * CHUNK_ROWS;
        if whole > 0 {
            self.write_inner(&batch.slice(offset, whole))?;
            offset += whole;
        }
        if offset < n {
            self.carry.push(batch.slice(offset, n - offset));
            self.carry_rows += n - offset;
        }
        Ok(())
    }

    fn flush_carry(&mut self) -> Result<(), Error> {
        if self.carry_rows == 0 {
            return Ok(());
        }
        let merged = arrow_select::concat::concat_batches(&self.schema, &self.carry)
            .map_err(|e| Error::arrow(&self.temp_path, e))?;
        self.carry.clear();
        self.carry_rows = 0;
        self.write_inner(&merged)
    }

    fn write_inner(&mut self, batch: &RecordBatch) -> Result<(), Error> {
        self.rows += batch.num_rows() as u64;
        self.writer
            .write(batch)
            .map_err(|e| Error::parquet(&self.temp_path, e))
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
        Ok(StagedFile {
            temp: self.temp.into_temp_path(),
            rows: self.rows,
            digest,
        })
    }
}

/// Renames a complete staged file to a local `path` (mode 0644) and fsyncs
/// its folder: for exports outside the data folder.
pub(crate) fn persist_local(staged: StagedFile, path: &Path) -> Result<(), Error> {
    sync_state::fsio::make_readable(&staged.temp)?;
    staged
        .temp
        .persist(path)
        .map_err(|e| Error::io(path, e.error))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Ok(sync_state::fsio::sync_dir(dir)?)
}
