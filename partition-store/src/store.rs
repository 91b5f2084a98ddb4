//! The partition layout and its operations.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::file::reader::{FileReader, SerializedFileReader};
use sync_state::{TableId, Tid};

use crate::file_writer::PartitionFileWriter;
use crate::{Error, PARTITION_EXT, SYNC_DIR_NAME, TEMP_PREFIX};

/// Batch size used when reading partitions back.
const READ_BATCH_ROWS: usize = 64 * 1024;

/// `Tid`-partitioned Parquet files under `<data>/statbank_tables`.
#[derive(Debug, Clone)]
pub struct PartitionStore {
    root: PathBuf,
}

/// What a one-shot write produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// The published file.
    pub path: PathBuf,
    /// Rows in it.
    pub rows: u64,
    /// Its content digest.
    pub digest: String,
}

/// The footer facts of a stored partition, read without touching its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionFooter {
    /// Rows in the file.
    pub rows: u64,
    /// The content digest written by statbank-sync (`None` for files written
    /// by other tools, such as the original Python system).
    pub digest: Option<String>,
    /// Column names in order.
    pub columns: Vec<String>,
}

impl PartitionStore {
    /// A store rooted at `tables_root` (`<data>/statbank_tables`).
    pub fn new(tables_root: impl Into<PathBuf>) -> PartitionStore {
        PartitionStore {
            root: tables_root.into(),
        }
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<TABLE_ID>`.
    pub fn table_dir(&self, table: &TableId) -> PathBuf {
        self.root.join(table.as_str())
    }

    /// `<root>/<TABLE_ID>/<urlquoted_tid>.parquet`.
    pub fn partition_path(&self, table: &TableId, tid: &Tid) -> PathBuf {
        self.table_dir(table)
            .join(format!("{}.{PARTITION_EXT}", tid.file_stem()))
    }

    /// Whether the partition file exists.
    pub fn has_partition(&self, table: &TableId, tid: &Tid) -> bool {
        self.partition_path(table, tid).is_file()
    }

    /// The periods stored for `table`: every `<quoted tid>.parquet` file whose
    /// name is the canonical quoting of a period code. Temp files, other
    /// extensions, hidden files and folders are ignored.
    pub fn list_tids(&self, table: &TableId) -> Result<BTreeSet<Tid>, Error> {
        let dir = self.table_dir(table);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
            Err(e) => return Err(Error::io(dir, e)),
        };
        let mut out = BTreeSet::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') {
                continue;
            }
            let Some(stem) = name.strip_suffix(&format!(".{PARTITION_EXT}")) else {
                continue;
            };
            let Ok(tid) = Tid::from_file_stem(stem) else {
                continue;
            };
            let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
            if is_file {
                out.insert(tid);
            }
        }
        Ok(out)
    }

    /// Whether `table` has at least one partition.
    pub fn has_partitions(&self, table: &TableId) -> Result<bool, Error> {
        Ok(!self.list_tids(table)?.is_empty())
    }

    /// Table ids that have a folder under the root (not `_sync`).
    pub fn list_tables(&self) -> Result<Vec<TableId>, Error> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&self.root, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&self.root, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name == SYNC_DIR_NAME || !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            if let Ok(id) = TableId::new(name) {
                if id.as_str() == name {
                    out.push(id);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes temp files left in `table`'s folder by an interrupted run.
    /// Call it only while holding the data folder's lock. Returns how many
    /// were removed.
    pub fn clean_temp_files(&self, table: &TableId) -> Result<usize, Error> {
        let dir = self.table_dir(table);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::io(dir, e)),
        };
        let mut n = 0;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let is_temp = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(TEMP_PREFIX));
            if is_temp && entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
                std::fs::remove_file(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Reads a partition's footer: row count, digest and columns.
    pub fn footer(&self, table: &TableId, tid: &Tid) -> Result<PartitionFooter, Error> {
        let path = self.partition_path(table, tid);
        read_footer(&path).map_err(|e| match e {
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Error::MissingPartition {
                    table: table.clone(),
                    tid: tid.clone(),
                    path: path.clone(),
                }
            }
            other => other,
        })
    }

    /// Opens a partition for reading as Arrow batches.
    pub fn read_partition(&self, table: &TableId, tid: &Tid) -> Result<PartitionReader, Error> {
        let path = self.partition_path(table, tid);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::MissingPartition {
                    table: table.clone(),
                    tid: tid.clone(),
                    path,
                })
            }
            Err(e) => return Err(Error::io(path, e)),
        };
        PartitionReader::open(file, path)
    }

    /// Writes one partition from whole batches, atomically (temp file, fsync,
    /// rename, fsync of the folder). For tools and tests; the sync uses
    /// [`crate::RequestWriter`], which streams.
    pub fn write_partition(
        &self,
        table: &TableId,
        tid: &Tid,
        batches: &[RecordBatch],
    ) -> Result<PartitionInfo, Error> {
        let schema = match batches.first() {
            Some(b) => b.schema(),
            None => {
                return Err(Error::Schema {
                    table: table.clone(),
                    message: "write_partition needs at least one batch (it may have zero rows)"
                        .into(),
                })
            }
        };
        let dir = self.table_dir(table);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let mut w = PartitionFileWriter::create(&dir, &schema)?;
        for b in batches {
            w.write(b)?;
        }
        let staged = w.finish()?;
        let path = self.partition_path(table, tid);
        let (rows, digest) = (staged.rows, staged.digest.clone());
        crate::request::persist(staged.temp, &path)?;
        crate::request::sync_dir(&dir)?;
        Ok(PartitionInfo { path, rows, digest })
    }

    /// Removes a partition (hard deletion of a period gone at the source).
    /// Returns whether a file was removed.
    pub fn remove_partition(&self, table: &TableId, tid: &Tid) -> Result<bool, Error> {
        let path = self.partition_path(table, tid);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                let dir = self.table_dir(table);
                crate::request::sync_dir(&dir)?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(path, e)),
        }
    }
}

pub(crate) fn read_footer(path: &Path) -> Result<PartitionFooter, Error> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = SerializedFileReader::new(file).map_err(|e| Error::parquet(path, e))?;
    let meta = reader.metadata().file_metadata();
    let digest = meta.key_value_metadata().and_then(|kvs| {
        kvs.iter()
            .find(|kv| kv.key == crate::DIGEST_KEY)
            .and_then(|kv| kv.value.clone())
    });
    let columns = meta
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    Ok(PartitionFooter {
        rows: u64::try_from(meta.num_rows()).unwrap_or(0),
        digest,
        columns,
    })
}

/// Streams a partition as Arrow batches of up to 64 Ki rows.
pub struct PartitionReader {
    inner: ParquetRecordBatchReader,
    schema: SchemaRef,
    rows: u64,
    path: PathBuf,
}

impl PartitionReader {
    pub(crate) fn open(file: File, path: PathBuf) -> Result<PartitionReader, Error> {
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::parquet(&path, e))?;
        let rows = u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
        let schema = builder.schema().clone();
        let inner = builder
            .with_batch_size(READ_BATCH_ROWS)
            .build()
            .map_err(|e| Error::parquet(&path, e))?;
        Ok(PartitionReader {
            inner,
            schema,
            rows,
            path,
        })
    }

    /// The partition's Arrow schema.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Rows in the partition (from its footer).
    pub fn num_rows(&self) -> u64 {
        self.rows
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Iterator for PartitionReader {
    type Item = Result<RecordBatch, Error>;
    fn next(&mut self) -> Option<Self::Item> {
        self.inner
            .next()
            .map(|r| r.map_err(|e| Error::arrow(&self.path, e)))
    }
}
