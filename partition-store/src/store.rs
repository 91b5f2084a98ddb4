//! The partition layout and its operations, on any [`Storage`].

use std::collections::BTreeSet;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::file::reader::{ChunkReader, FileReader, SerializedFileReader};
use sync_state::{
    DataDir, Storage, TableId, Tid, ARCHIVE_DIR, ICEBERG_DIR, SYNC_DIR, VINTAGES_DIR,
};

use crate::file_writer::{PartitionFileWriter, StagedFile};
use crate::source::{self, Source};
use crate::{Error, PartitionMeta, DIGEST_KEY, VALID_FROM_KEY, VARIABLES_KEY};

/// Rows a batch when reading partitions back ([`PartitionStore::read_partition`]).
/// 16 Ki rows read as fast as 64 Ki (the apply, the reconcile and a plain
/// read of the 2 M-row bench table alike) and hold about 3 MiB less: a
/// batch's arrays are the largest thing a reader holds.
pub const READ_BATCH_ROWS: usize = 16 * 1024;

/// `Tid`-partitioned Parquet files under `<data>/statbank_tables`, on a
/// local folder or an object store.
#[derive(Debug, Clone)]
pub struct PartitionStore {
    dir: DataDir,
    /// The facts of files this store published, until the table's Iceberg
    /// metadata takes them ([`PartitionStore::remembering_published`]).
    published: Option<std::sync::Arc<crate::iceberg::Published>>,
}

/// What a one-shot write produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// The published partition's key.
    pub key: String,
    /// Rows in it.
    pub rows: u64,
    /// Its content digest.
    pub digest: String,
}

/// The footer facts of a stored partition, read without touching its data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartitionFooter {
    /// Rows in the file.
    pub rows: u64,
    /// The content digest written by statbank-sync (`None` for files written
    /// by other tools, such as the original Python system).
    pub digest: Option<String>,
    /// Column names in order.
    pub columns: Vec<String>,
    /// The table's variable ids when the file was written (its schema
    /// signature), if recorded.
    pub variables: Option<Vec<String>>,
    /// The catalog `updated` of the cycle that published this content.
    pub valid_from: Option<String>,
}

impl PartitionStore {
    /// The partitions of data folder `dir`.
    pub fn new(dir: &DataDir) -> PartitionStore {
        PartitionStore {
            dir: dir.clone(),
            published: None,
        }
    }

    /// The same store, keeping the footer facts (size, rows, columns,
    /// validity) of every partition it publishes until
    /// [`PartitionStore::write_iceberg`] describes the table, which then
    /// reads no footer of a file just written (`--iceberg` on an object
    /// store: a bootstrap would otherwise read back every footer). Clones
    /// share what is kept; each table's facts are held only until its
    /// metadata is written.
    pub fn remembering_published(self) -> PartitionStore {
        PartitionStore {
            published: Some(std::sync::Arc::default()),
            ..self
        }
    }

    /// Keeps the facts of `staged`, just published at `key`.
    pub(crate) fn record_published(&self, key: &str, staged: &StagedFile) {
        if let Some(p) = &self.published {
            p.record(key, staged);
        }
    }

    /// The kept facts of files published under `from/` now live under `to/`
    /// (a set swapped in).
    pub(crate) fn move_published(&self, from: &str, to: &str) {
        if let Some(p) = &self.published {
            p.rekey(from, to);
        }
    }

    /// Takes the kept facts of `table`'s files (current and staged).
    pub(crate) fn take_published(&self, table: &TableId) -> crate::iceberg::PublishedFacts {
        match &self.published {
            Some(p) => p.take(&[
                format!("{}/", self.dir.table_key(table)),
                format!("{}/{table}/", self.dir.staging_key()),
            ]),
            None => Default::default(),
        }
    }

    /// The data folder.
    pub fn data_dir(&self) -> &DataDir {
        &self.dir
    }

    /// The storage underneath.
    pub fn storage(&self) -> &Storage {
        self.dir.storage()
    }

    /// `statbank_tables/<TABLE_ID>/<urlquoted_tid>.parquet`.
    pub fn partition_key(&self, table: &TableId, tid: &Tid) -> String {
        self.dir.partition_key(table, tid)
    }

    /// The partition as shown to a person (its path, or its object URL).
    pub fn display_partition(&self, table: &TableId, tid: &Tid) -> String {
        self.dir.display_key(&self.partition_key(table, tid))
    }

    /// Whether the partition exists.
    pub fn has_partition(&self, table: &TableId, tid: &Tid) -> Result<bool, Error> {
        Ok(self
            .storage()
            .head(&self.partition_key(table, tid))?
            .is_some())
    }

    /// The periods stored for `table`: every `<quoted tid>.parquet` object
    /// directly in its folder whose name is the canonical quoting of a period
    /// code. Temp files, other extensions and hidden files are ignored.
    pub fn list_tids(&self, table: &TableId) -> Result<BTreeSet<Tid>, Error> {
        list_set(self.storage(), &self.dir.table_key(table))
    }

    /// Whether `table` has at least one partition.
    pub fn has_partitions(&self, table: &TableId) -> Result<bool, Error> {
        Ok(!self.list_tids(table)?.is_empty())
    }

    /// Table ids that have a folder under the root (not `_sync`,
    /// `_vintages`).
    pub fn list_tables(&self) -> Result<Vec<TableId>, Error> {
        let listing = self.storage().list_dir(&self.dir.tables_key())?;
        let mut out: Vec<TableId> = listing
            .dirs
            .iter()
            .filter(|n| ![SYNC_DIR, VINTAGES_DIR, ARCHIVE_DIR, ICEBERG_DIR].contains(&n.as_str()))
            .filter_map(|n| TableId::new(n).ok().filter(|id| id.as_str() == n))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Removes temp files left in `table`'s folder and its vintages'
    /// folders by an interrupted run (local folders; an object store never
    /// holds partial objects). Call it only while holding the data folder's
    /// lock. Returns how many.
    pub fn clean_temp_files(&self, table: &TableId) -> usize {
        let storage = self.storage();
        let mut removed = storage.clean_temp_files(&self.dir.table_key(table));
        if storage.is_local() {
            let vintages = self.dir.vintages_key(table);
            // A folder that cannot be listed has no temp files to find.
            let periods = storage
                .list_dir(&vintages)
                .map(|l| l.dirs)
                .unwrap_or_default();
            for period in periods {
                removed += storage.clean_temp_files(&sync_state::storage::join(&vintages, &period));
            }
        }
        removed
    }

    /// Reads a partition's footer: rows, digest, columns and metadata.
    pub fn footer(&self, table: &TableId, tid: &Tid) -> Result<PartitionFooter, Error> {
        read_footer(self.storage(), &self.partition_key(table, tid))?.ok_or_else(|| {
            Error::MissingPartition {
                table: table.clone(),
                tid: tid.clone(),
                path: self.display_partition(table, tid),
            }
        })
    }

    /// Opens a partition for reading as Arrow batches of up to
    /// [`READ_BATCH_ROWS`] rows.
    pub fn read_partition(&self, table: &TableId, tid: &Tid) -> Result<PartitionReader, Error> {
        self.read_partition_in_batches(table, tid, READ_BATCH_ROWS)
    }

    /// Opens a partition for reading as Arrow batches of up to `rows` rows
    /// (fewer hold less: for a reader that holds something else beside
    /// it).
    pub fn read_partition_in_batches(
        &self,
        table: &TableId,
        tid: &Tid,
        rows: usize,
    ) -> Result<PartitionReader, Error> {
        let key = self.partition_key(table, tid);
        open_reader(self.storage(), &key, rows)?.ok_or_else(|| Error::MissingPartition {
            table: table.clone(),
            tid: tid.clone(),
            path: self.display_partition(table, tid),
        })
    }

    /// Writes one partition from whole batches, atomically. For tools and
    /// tests; the sync uses [`crate::RequestWriter`], which streams.
    pub fn write_partition(
        &self,
        table: &TableId,
        tid: &Tid,
        batches: &[RecordBatch],
        meta: &PartitionMeta,
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
        let key = self.partition_key(table, tid);
        let scratch = self.storage().scratch_dir(&self.dir.table_key(table))?;
        let mut w = PartitionFileWriter::create(&scratch, &schema, meta)?;
        for b in batches {
            w.write(b)?;
        }
        let staged = w.finish()?;
        let (rows, digest) = (staged.rows, staged.digest.clone());
        self.storage().put_file(&key, &staged.temp)?;
        self.record_published(&key, &staged);
        Ok(PartitionInfo { key, rows, digest })
    }

    /// Removes a partition (hard deletion of a period gone at the source).
    /// Returns whether one was removed.
    pub fn remove_partition(&self, table: &TableId, tid: &Tid) -> Result<bool, Error> {
        Ok(self.storage().delete(&self.partition_key(table, tid))?)
    }
}

/// The period set stored directly under `prefix`.
pub(crate) fn list_set(storage: &Storage, prefix: &str) -> Result<BTreeSet<Tid>, Error> {
    let listing = storage.list_dir(prefix)?;
    let suffix = format!(".{}", sync_state::PARTITION_EXT);
    Ok(listing
        .files
        .iter()
        .filter(|(name, _)| !name.starts_with('.'))
        .filter_map(|(name, _)| name.strip_suffix(&suffix))
        .filter_map(|stem| Tid::from_file_stem(stem).ok())
        .collect())
}

/// The footer of the object at `key`, or `None` when it does not exist.
pub(crate) fn read_footer(storage: &Storage, key: &str) -> Result<Option<PartitionFooter>, Error> {
    let shown = storage.display_key(key);
    match source::open(storage, key)? {
        None => Ok(None),
        Some(Source::File(f)) => footer_of(f, &shown).map(Some),
        Some(Source::Object(o)) => {
            read_footer_sized(storage, key, parquet::file::reader::Length::len(&o))
        }
    }
}

/// The footer of the object at `key` whose size is known (listed): on an
/// object store one ranged request for the file's tail, which holds the
/// footer of any partition this project writes (a larger footer costs two
/// more).
pub(crate) fn read_footer_sized(
    storage: &Storage,
    key: &str,
    size: u64,
) -> Result<Option<PartitionFooter>, Error> {
    if storage.is_local() {
        return read_footer(storage, key);
    }
    let shown = storage.display_key(key);
    // The tail first: parquet's blocking reader ignores a prefetch hint and
    // would send two requests (the 8-byte footer, then the metadata).
    let tail_len = size.min(FOOTER_PREFETCH as u64);
    let tail = storage.get_range(key, size - tail_len, tail_len)?;
    if let Some(meta) = metadata_in_tail(&tail).map_err(|e| Error::parquet(&shown, e))? {
        return Ok(Some(footer_from(meta.file_metadata())));
    }
    let source = source::ObjectSource::new(storage, key, size);
    let meta = parquet::file::metadata::ParquetMetaDataReader::new()
        .parse_and_finish(&source)
        .map_err(|e| Error::parquet(&shown, e))?;
    Ok(Some(footer_from(meta.file_metadata())))
}

/// The metadata in the last bytes of a Parquet file, when they hold all of
/// it (`None`: it starts before them).
pub(crate) fn metadata_in_tail(
    tail: &[u8],
) -> parquet::errors::Result<Option<parquet::file::metadata::ParquetMetaData>> {
    use parquet::file::metadata::{FooterTail, ParquetMetaDataReader};
    const FOOTER: usize = 8;
    let Some(end) = tail.len().checked_sub(FOOTER) else {
        return Err(parquet::errors::ParquetError::EOF(
            "shorter than a Parquet footer".into(),
        ));
    };
    let mut footer = [0u8; FOOTER];
    footer.copy_from_slice(&tail[end..]);
    let len = FooterTail::try_new(&footer)?.metadata_length();
    match end.checked_sub(len) {
        Some(start) => ParquetMetaDataReader::decode_metadata(&tail[start..end]).map(Some),
        None => Ok(None),
    }
}

/// Bytes read from a file's end for its footer in one request.
const FOOTER_PREFETCH: usize = 64 * 1024;

fn footer_of<R: ChunkReader + 'static>(r: R, shown: &str) -> Result<PartitionFooter, Error> {
    let reader = SerializedFileReader::new(r).map_err(|e| Error::parquet(shown, e))?;
    Ok(footer_from(reader.metadata().file_metadata()))
}

fn footer_from(meta: &parquet::file::metadata::FileMetaData) -> PartitionFooter {
    let kv = |k: &str| {
        meta.key_value_metadata().and_then(|kvs| {
            kvs.iter()
                .find(|kv| kv.key == k)
                .and_then(|kv| kv.value.clone())
        })
    };
    let columns = meta
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    PartitionFooter {
        rows: u64::try_from(meta.num_rows()).unwrap_or(0),
        digest: kv(DIGEST_KEY),
        columns,
        variables: kv(VARIABLES_KEY).and_then(|v| serde_json::from_str(&v).ok()),
        valid_from: kv(VALID_FROM_KEY),
    }
}

/// A reader over the object at `key` in batches of up to `rows` rows, or
/// `None` when it does not exist.
pub(crate) fn open_reader(
    storage: &Storage,
    key: &str,
    rows: usize,
) -> Result<Option<PartitionReader>, Error> {
    let shown = storage.display_key(key);
    match source::open(storage, key)? {
        None => Ok(None),
        Some(Source::File(f)) => PartitionReader::open(f, shown, rows).map(Some),
        Some(Source::Object(o)) => PartitionReader::open(o, shown, rows).map(Some),
    }
}

/// Streams a partition as Arrow batches (of up to [`READ_BATCH_ROWS`]
/// rows unless the opener says otherwise).
pub struct PartitionReader {
    inner: ParquetRecordBatchReader,
    schema: SchemaRef,
    rows: u64,
    path: String,
}

impl PartitionReader {
    pub(crate) fn open<R: ChunkReader + 'static>(
        src: R,
        path: String,
        batch_rows: usize,
    ) -> Result<PartitionReader, Error> {
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(src).map_err(|e| Error::parquet(&path, e))?;
        let rows = u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
        let schema = builder.schema().clone();
        let inner = builder
            .with_batch_size(batch_rows.max(1))
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

    /// The file being read (a path, or an object's URL).
    pub fn path(&self) -> &str {
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
