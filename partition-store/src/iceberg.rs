//! Iceberg metadata beside the mirror (`--iceberg`): every table described
//! as an Apache Iceberg v2 table without moving or rewriting a partition.
//!
//! ```text
//! statbank_tables/_iceberg/<TABLE_ID>/metadata/v<N>.metadata.json
//! statbank_tables/_iceberg/<TABLE_ID>/metadata/version-hint.text
//! statbank_tables/_iceberg/<TABLE_ID>/metadata/snap-<snapshot>-<digest>.avro   (manifest list)
//! statbank_tables/_iceberg/<TABLE_ID>/metadata/<digest>-m0.avro               (manifest)
//! ```
//!
//! The data files are the partitions and vintages where they are, named by
//! absolute path (a local folder) or URL (`s3://…`). The files carry no
//! Iceberg field ids, so the schema comes with a name mapping
//! (`schema.name-mapping.default`); the table is partitioned by identity on
//! `TID`, whose value is the period of the file's name (zero-row periods
//! too). There is one snapshot per instant at which the table's published
//! content changed, on StatBank's clock: the `updated` values that start
//! and end the validity of the current partitions and the vintages. A
//! snapshot references, per period, the file that was published then
//! (the current partition, or the vintage whose interval holds the
//! instant), exactly as [`PartitionStore::as_of`] chooses; without vintages
//! only the current snapshot exists.
//!
//! Everything is derived from the stored files, so regenerating is
//! idempotent: snapshot ids and the table's uuid are hashes of the table
//! and the instant, manifests are named by a digest of what they list and
//! never rewritten, and a metadata version equal to the current one is not
//! written at all. A new version is written whole before `version-hint.text`
//! names it. Versions superseded longer ago than a grace period are
//! removed, and with them the manifests only they referenced.
//!
//! The tables are read-only (`gc.enabled=false`): an Iceberg writer or
//! maintenance job (expire snapshots, remove orphan files, compaction)
//! would delete or replace mirror files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use apache_avro::types::Value as Avro;
use apache_avro::{Codec, DeflateSettings, Schema as AvroSchema, Writer};
use serde::{Deserialize, Serialize};
use sync_state::{Storage, TableId, Tid, PARTITION_EXT, TIME_COLUMN, VALUE_COLUMN};
use xxhash_rust::xxh3::{xxh3_128, xxh3_64};

use crate::file_writer::StagedFile;
use crate::store::read_footer_sized;
use crate::{Error, PartitionStore};

/// The metadata folder's name under `statbank_tables/_iceberg/<TABLE_ID>`.
pub const ICEBERG_METADATA_DIR: &str = "metadata";
/// The file naming the current metadata version (a Hadoop-style table).
pub const VERSION_HINT: &str = "version-hint.text";
/// How long a superseded metadata version is kept for readers that opened
/// it (24 hours), unless [`IcebergOptions::grace_ms`] says otherwise.
pub const DEFAULT_GRACE_MS: i64 = 24 * 3600 * 1000;

/// The partition field's id (Iceberg starts partition field ids at 1000).
const PARTITION_FIELD_ID: i32 = 1000;
/// The Avro manifest schema's name for the partition field.
const PARTITION_FIELD: &str = TIME_COLUMN;
/// Manifest entry status: added in the snapshot.
const ADDED: i32 = 1;

/// How [`PartitionStore::write_iceberg`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcebergOptions {
    /// Now, in milliseconds since the epoch (a version's `last-updated-ms`,
    /// and the clock of the grace period).
    pub now_ms: i64,
    /// Superseded metadata versions are removed this long after their
    /// successor was written.
    pub grace_ms: i64,
}

impl IcebergOptions {
    /// Defaults at `now_ms`.
    pub fn at(now_ms: i64) -> IcebergOptions {
        IcebergOptions {
            now_ms,
            grace_ms: DEFAULT_GRACE_MS,
        }
    }
}

/// What [`PartitionStore::write_iceberg`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcebergOutcome {
    /// The current version (`v<N>.metadata.json`); `None` when the table
    /// has no files, so it has no metadata.
    pub version: Option<u64>,
    /// Whether a new version was written (`false`: the current one already
    /// described the files, and nothing was written).
    pub written: bool,
    /// Snapshots in the current version.
    pub snapshots: usize,
    /// Bytes of metadata written (metadata JSON, hint, manifests).
    pub bytes_written: u64,
    /// Metadata files removed (versions past the grace period, their
    /// manifests).
    pub removed: usize,
    /// Data files whose footer was read: those neither in the facts cache
    /// nor kept from their publish ([`PartitionStore::remembering_published`]).
    pub footers_read: usize,
}

/// One file of the table, current or vintage.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DataFile {
    tid: Tid,
    key: String,
    size: u64,
    /// The object's version (ETag), when listed.
    version: Option<String>,
    rows: u64,
    columns: Vec<String>,
    /// `None`: before validity was recorded (valid from the beginning).
    valid_from: Option<String>,
    /// `None`: the current partition.
    valid_to: Option<String>,
}

impl DataFile {
    fn covers(&self, at: &str) -> bool {
        self.valid_from.as_deref().is_none_or(|f| f <= at)
            && self.valid_to.as_deref().is_none_or(|t| at < t)
    }
}

/// `metadata/statbank-files.json`: the footer facts of the table's files,
/// by key, so a regeneration reads only the footers of files it has not
/// seen. A vintage never changes (its key names its interval): its entry
/// holds while its size does. A current partition is replaced in place:
/// its entry holds while the object store's version (ETag) and size do
/// (a local folder lists no versions, and reads its footers, which is
/// cheap there). Iceberg readers ignore the file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct FileFacts {
    files: BTreeMap<String, Facts>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Facts {
    size: u64,
    rows: u64,
    columns: Vec<String>,
    /// A current partition's version (ETag) when its facts were read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    /// A current partition's recorded validity start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    valid_from: Option<String>,
}

/// The footer facts of files a store published, by key, kept for the
/// table's next metadata ([`PartitionStore::remembering_published`]).
#[derive(Debug, Default)]
pub(crate) struct Published(std::sync::Mutex<PublishedFacts>);

/// Kept facts by key: the file's size when written, and what its footer
/// says. Trusted while the listed size is the same: the data folder's lock
/// keeps other writers out, and every path of this crate that places a
/// partition records it.
pub(crate) type PublishedFacts = std::collections::HashMap<String, Facts>;

impl Published {
    fn lock(&self) -> std::sync::MutexGuard<'_, PublishedFacts> {
        // A panic elsewhere leaves the map as it was: still usable.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn record(&self, key: &str, staged: &StagedFile) {
        let facts = Facts {
            size: staged.size,
            rows: staged.rows,
            columns: staged.columns.clone(),
            version: None,
            valid_from: staged.valid_from.clone(),
        };
        self.lock().insert(key.to_string(), facts);
    }

    /// Facts kept under `from/` move to `to/`, replacing those there.
    pub(crate) fn rekey(&self, from: &str, to: &str) {
        let (from, to) = (format!("{from}/"), format!("{to}/"));
        let mut map = self.lock();
        map.retain(|k, _| !k.starts_with(&to));
        let moved: Vec<String> = map
            .keys()
            .filter(|k| k.starts_with(&from))
            .cloned()
            .collect();
        for key in moved {
            if let Some(f) = map.remove(&key) {
                map.insert(format!("{to}{}", &key[from.len()..]), f);
            }
        }
    }

    /// Removes and returns the facts kept under any of `prefixes`.
    pub(crate) fn take(&self, prefixes: &[String]) -> PublishedFacts {
        let mut map = self.lock();
        let keys: Vec<String> = map
            .keys()
            .filter(|k| prefixes.iter().any(|p| k.starts_with(p.as_str())))
            .cloned()
            .collect();
        keys.into_iter()
            .filter_map(|k| map.remove(&k).map(|f| (k, f)))
            .collect()
    }
}

/// What a table's metadata folder holds.
struct Stored {
    /// The footer facts cache.
    known: FileFacts,
    /// The version the hint names, and its metadata.
    current: Option<(u64, TableMetadata)>,
    /// The highest `v<N>.metadata.json` present (0: none).
    highest: u64,
}

/// A listed file of the table, before its footer facts are known.
#[derive(Debug, Clone)]
struct ListedFile {
    tid: Tid,
    key: String,
    size: u64,
    /// The object's version (ETag), when the backend lists one.
    version: Option<String>,
    /// A vintage's validity, from its name; `None` for the current
    /// partition, whose start is in its footer.
    vintage: Option<(Option<String>, String)>,
}

impl ListedFile {
    /// The file with `facts`, when they are still its facts.
    fn with_facts(&self, facts: &Facts) -> Option<DataFile> {
        let same = facts.size == self.size
            && match &self.vintage {
                Some(_) => true,
                None => self.version.is_some() && facts.version == self.version,
            };
        same.then(|| self.facts_file(facts))
    }

    /// The file with the facts this process kept when it published it:
    /// they hold while the size does.
    fn with_published(&self, facts: &Facts) -> Option<DataFile> {
        (facts.size == self.size).then(|| self.facts_file(facts))
    }

    fn facts_file(&self, facts: &Facts) -> DataFile {
        self.data_file(facts.rows, facts.columns.clone(), facts.valid_from.clone())
    }

    fn data_file(&self, rows: u64, columns: Vec<String>, valid_from: Option<String>) -> DataFile {
        let (valid_from, valid_to) = match &self.vintage {
            Some((from, to)) => (from.clone(), Some(to.clone())),
            None => (valid_from, None),
        };
        DataFile {
            tid: self.tid.clone(),
            key: self.key.clone(),
            size: self.size,
            version: self.version.clone(),
            rows,
            columns,
            valid_from,
            valid_to,
        }
    }
}

/// `a` and `b`, at once on an object store (each waits on requests),
/// one after the other locally.
fn join<A: Send, B: Send>(
    storage: &Storage,
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    if storage.is_local() {
        return (a(), b());
    }
    std::thread::scope(|scope| {
        let b = scope.spawn(b);
        let a = a();
        match b.join() {
            Ok(b) => (a, b),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Requests an object store is sent at once (footers, manifests).
const IN_FLIGHT: usize = 16;

/// `f` over `items` in order: [`IN_FLIGHT`] at a time on an object store,
/// where each call waits on a request; one by one locally. The first error
/// wins.
fn fan_out<T: Sync, R: Send>(
    storage: &Storage,
    items: &[T],
    f: impl Fn(&T) -> Result<R, Error> + Sync,
) -> Result<Vec<R>, Error> {
    let width = if storage.is_local() { 1 } else { IN_FLIGHT };
    if width == 1 || items.len() <= 1 {
        return items.iter().map(&f).collect();
    }
    let per_thread = items.len().div_ceil(width);
    std::thread::scope(|scope| {
        let f = &f;
        let workers: Vec<_> = items
            .chunks(per_thread)
            .map(|chunk| {
                scope.spawn(move || chunk.iter().map(f).collect::<Result<Vec<R>, Error>>())
            })
            .collect();
        let mut out = Vec::with_capacity(items.len());
        for w in workers {
            match w.join() {
                Ok(done) => out.extend(done?),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok(out)
    })
}

/// The name of the footer facts cache in the metadata folder.
const FACTS_FILE: &str = "statbank-files.json";

/// A snapshot to describe: an instant and the files published then.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PlannedSnapshot<'a> {
    /// Source clock (`YYYY-MM-DDTHH:MM:SS`).
    at: String,
    files: Vec<&'a DataFile>,
}

/// The instants at which the published content changed, and the files of
/// each (pure: the choice [`PartitionStore::as_of`] makes, per instant).
/// `fallback` (the table's `updated`) dates the only snapshot of files
/// without validity records. Consecutive instants with the same files are
/// one snapshot.
fn plan_snapshots<'a>(files: &'a [DataFile], fallback: &str) -> Vec<PlannedSnapshot<'a>> {
    let mut instants: BTreeSet<&str> = BTreeSet::new();
    for f in files {
        instants.extend(f.valid_from.as_deref());
        instants.extend(f.valid_to.as_deref());
    }
    if instants.is_empty() {
        instants.insert(fallback);
    }
    let mut out: Vec<PlannedSnapshot<'a>> = Vec::new();
    for at in instants {
        let mut chosen: BTreeMap<&Tid, &DataFile> = BTreeMap::new();
        for f in files.iter().filter(|f| f.covers(at)) {
            // The current partition wins over a vintage of the same period
            // (as `as_of`); among vintages the latest interval.
            let better = chosen.get(&f.tid).is_none_or(|c| {
                c.valid_to.is_some()
                    && (f.valid_to.is_none() || f.valid_to.as_deref() > c.valid_to.as_deref())
            });
            if better {
                chosen.insert(&f.tid, f);
            }
        }
        let files: Vec<&DataFile> = chosen.into_values().collect();
        if out.last().is_some_and(|p| p.files == files) {
            continue;
        }
        out.push(PlannedSnapshot {
            at: at.to_string(),
            files,
        });
    }
    // Before the first content there is nothing to describe.
    while out.first().is_some_and(|p| p.files.is_empty()) {
        out.remove(0);
    }
    out
}

/// `v<N>.metadata.json` (Iceberg table format v2), the fields written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct TableMetadata {
    format_version: u8,
    table_uuid: String,
    location: String,
    last_sequence_number: i64,
    last_updated_ms: i64,
    last_column_id: i32,
    current_schema_id: i32,
    schemas: Vec<IcebergSchema>,
    default_spec_id: i32,
    partition_specs: Vec<PartitionSpec>,
    last_partition_id: i32,
    default_sort_order_id: i32,
    sort_orders: Vec<SortOrder>,
    properties: BTreeMap<String, String>,
    current_snapshot_id: Option<i64>,
    refs: BTreeMap<String, SnapshotRef>,
    snapshots: Vec<Snapshot>,
    snapshot_log: Vec<SnapshotLogEntry>,
    metadata_log: Vec<MetadataLogEntry>,
}

impl TableMetadata {
    /// What the version says about the table, without when it was written
    /// and which versions came before.
    fn content(&self) -> TableMetadata {
        TableMetadata {
            last_updated_ms: 0,
            metadata_log: Vec::new(),
            ..self.clone()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct IcebergSchema {
    #[serde(rename = "type")]
    kind: String,
    schema_id: i32,
    fields: Vec<SchemaField>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SchemaField {
    id: i32,
    name: String,
    required: bool,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct PartitionSpec {
    spec_id: i32,
    fields: Vec<PartitionField>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct PartitionField {
    name: String,
    transform: String,
    source_id: i32,
    field_id: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct SortOrder {
    order_id: i32,
    fields: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct SnapshotRef {
    snapshot_id: i64,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Snapshot {
    snapshot_id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parent_snapshot_id: Option<i64>,
    sequence_number: i64,
    timestamp_ms: i64,
    manifest_list: String,
    summary: BTreeMap<String, String>,
    schema_id: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct SnapshotLogEntry {
    timestamp_ms: i64,
    snapshot_id: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct MetadataLogEntry {
    timestamp_ms: i64,
    metadata_file: String,
}

/// One entry of the name mapping.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct MappedField {
    #[serde(rename = "field-id")]
    field_id: i32,
    names: Vec<String>,
}

/// The Avro schema of a manifest list entry (Iceberg v2 `manifest_file`).
const MANIFEST_LIST_SCHEMA: &str = r#"{"type":"record","name":"manifest_file","fields":[
 {"name":"manifest_path","type":"string","field-id":500},
 {"name":"manifest_length","type":"long","field-id":501},
 {"name":"partition_spec_id","type":"int","field-id":502},
 {"name":"content","type":"int","field-id":517},
 {"name":"sequence_number","type":"long","field-id":515},
 {"name":"min_sequence_number","type":"long","field-id":516},
 {"name":"added_snapshot_id","type":"long","field-id":503},
 {"name":"added_files_count","type":"int","field-id":504},
 {"name":"existing_files_count","type":"int","field-id":505},
 {"name":"deleted_files_count","type":"int","field-id":506},
 {"name":"added_rows_count","type":"long","field-id":512},
 {"name":"existing_rows_count","type":"long","field-id":513},
 {"name":"deleted_rows_count","type":"long","field-id":514},
 {"name":"partitions","type":["null",{"type":"array","element-id":508,"items":
   {"type":"record","name":"r508","fields":[
    {"name":"contains_null","type":"boolean","field-id":509},
    {"name":"contains_nan","type":["null","boolean"],"default":null,"field-id":518},
    {"name":"lower_bound","type":["null","bytes"],"default":null,"field-id":510},
    {"name":"upper_bound","type":["null","bytes"],"default":null,"field-id":511}]}}],
  "default":null,"field-id":507}]}"#;

/// The Avro schema of a manifest entry (Iceberg v2 `manifest_entry`,
/// partitioned by `TID`).
const MANIFEST_SCHEMA: &str = r#"{"type":"record","name":"manifest_entry","fields":[
 {"name":"status","type":"int","field-id":0},
 {"name":"snapshot_id","type":["null","long"],"default":null,"field-id":1},
 {"name":"sequence_number","type":["null","long"],"default":null,"field-id":3},
 {"name":"file_sequence_number","type":["null","long"],"default":null,"field-id":4},
 {"name":"data_file","field-id":2,"type":{"type":"record","name":"r2","fields":[
  {"name":"content","type":"int","field-id":134},
  {"name":"file_path","type":"string","field-id":100},
  {"name":"file_format","type":"string","field-id":101},
  {"name":"partition","field-id":102,"type":{"type":"record","name":"r102","fields":[
   {"name":"TID","type":["null","string"],"default":null,"field-id":1000}]}},
  {"name":"record_count","type":"long","field-id":103},
  {"name":"file_size_in_bytes","type":"long","field-id":104}]}}]}"#;

impl PartitionStore {
    /// `statbank_tables/_iceberg/<TABLE_ID>/metadata`.
    pub fn iceberg_metadata_key(&self, table: &TableId) -> String {
        format!(
            "{}/{ICEBERG_METADATA_DIR}",
            self.data_dir().iceberg_key(table)
        )
    }

    /// (Re)generates `table`'s Iceberg metadata from its partitions and
    /// vintages (see the module docs); `updated` (the table's catalog
    /// `updated`) dates the snapshot of files that carry no validity. A
    /// table without files loses its metadata. Call it with the data
    /// folder's lock held, after the table's partitions are published.
    pub fn write_iceberg(
        &self,
        table: &TableId,
        updated: &str,
        opts: &IcebergOptions,
    ) -> Result<IcebergOutcome, Error> {
        // Temp files of a write that a killed process left behind.
        let storage = self.storage();
        storage.clean_temp_files(&self.iceberg_metadata_key(table));
        let published = self.take_published(table);
        let w = MetadataWriter::new(self, table)?;
        // What is stored, read at once: the metadata folder (and what its
        // listing shows to read) and the table's files.
        let (stored, listed) = join(storage, || w.stored(), || self.listed_files(table));
        let Stored {
            known,
            current,
            highest,
        } = stored?;
        let (files, footers_read) = self.iceberg_files(table, listed?, &known, &published)?;
        let planned = plan_snapshots(&files, updated);
        if planned.is_empty() {
            let removed = self.remove_iceberg(table)?;
            return Ok(IcebergOutcome {
                version: None,
                written: false,
                snapshots: 0,
                bytes_written: 0,
                removed,
                footers_read,
            });
        }
        let mut writes = Vec::new();
        writes.extend(self.facts_write(table, &files, &known)?);
        let mut meta = w.describe(&planned, current.as_ref().map(|(_, m)| m), &mut writes)?;
        let unchanged = current
            .as_ref()
            .is_some_and(|(_, cur)| cur.content() == meta.content());
        let new_version = if unchanged {
            None
        } else {
            meta.last_updated_ms = opts.now_ms;
            let (version, expired) = w.log_versions(&mut meta, current.as_ref(), highest, opts);
            writes.push(w.version_write(version, &meta)?);
            Some((version, expired))
        };
        // Manifests, lists, the facts cache and the new version are files
        // nothing reads before the hint names the version: written at once.
        fan_out(storage, &writes, |(key, body)| {
            storage.put(key, body).map_err(Error::from)
        })?;
        let mut bytes: u64 = writes.iter().map(|(_, body)| body.len() as u64).sum();
        let Some((version, expired)) = new_version else {
            return Ok(IcebergOutcome {
                version: current.map(|(n, _)| n),
                written: false,
                snapshots: meta.snapshots.len(),
                bytes_written: bytes,
                removed: 0,
                footers_read,
            });
        };
        sync_state::crash::point("iceberg metadata written");
        bytes += w.commit(version)?;
        // Manifests become garbage only when the versions naming them
        // expire (or a killed run left them): collected then.
        let removed = if expired.is_empty() {
            0
        } else {
            w.collect_garbage(&meta, &expired)?
        };
        Ok(IcebergOutcome {
            version: Some(version),
            written: true,
            snapshots: meta.snapshots.len(),
            bytes_written: bytes,
            removed,
            footers_read,
        })
    }

    /// Where the data folder is, as the metadata names it: its absolute path,
    /// or its URL. Metadata written under another location (a folder that
    /// was copied or moved) names files that are not this folder's.
    pub fn iceberg_location(&self) -> Result<String, Error> {
        let storage = self.storage();
        match storage.local_root() {
            Some(r) => std::fs::canonicalize(r)
                .map(|p| p.display().to_string())
                .map_err(|e| Error::Io {
                    path: r.to_path_buf(),
                    source: e,
                }),
            None => Ok(storage.describe()),
        }
    }

    /// Removes `table`'s Iceberg metadata (a table gone from the mirror, or
    /// `--no-iceberg`); returns how many files.
    pub fn remove_iceberg(&self, table: &TableId) -> Result<usize, Error> {
        let key = self.data_dir().iceberg_key(table);
        let n = self.storage().delete_prefix(&key)?;
        Ok(n)
    }

    /// The `listed` files of `table` with their footer facts: from `known`
    /// (the cache) or `published` (kept when this process wrote them) where
    /// they still hold, else read (several at once on an object store); and
    /// how many were read.
    fn iceberg_files(
        &self,
        table: &TableId,
        listed: Vec<ListedFile>,
        known: &FileFacts,
        published: &PublishedFacts,
    ) -> Result<(Vec<DataFile>, usize), Error> {
        let storage = self.storage();
        let mut out = Vec::with_capacity(listed.len());
        let mut unknown = Vec::new();
        for l in listed {
            let cached = || known.files.get(&l.key).and_then(|k| l.with_facts(k));
            let kept = || published.get(&l.key).and_then(|k| l.with_published(k));
            match cached().or_else(kept) {
                Some(f) => out.push(f),
                None => unknown.push(l),
            }
        }
        out.extend(fan_out(storage, &unknown, |l| {
            data_file(storage, table, l)
        })?);
        Ok((out, unknown.len()))
    }

    /// The table's current partitions and vintages as listed.
    fn listed_files(&self, table: &TableId) -> Result<Vec<ListedFile>, Error> {
        let folder = format!("{}/", self.data_dir().table_key(table));
        let suffix = format!(".{PARTITION_EXT}");
        let (partitions, vintages) = join(
            self.storage(),
            || self.storage().list_recursive(folder.trim_end_matches('/')),
            || self.list_vintages(table),
        );
        let mut out = Vec::new();
        for obj in partitions? {
            let Some(tid) = obj
                .key
                .strip_prefix(&folder)
                .filter(|name| !name.contains('/'))
                .and_then(|name| {
                    let tid = Tid::from_file_stem(name.strip_suffix(&suffix)?).ok()?;
                    (format!("{}{suffix}", tid.file_stem()) == name).then_some(tid)
                })
            else {
                continue;
            };
            out.push(ListedFile {
                tid,
                key: obj.key,
                size: obj.size,
                version: obj.version,
                vintage: None,
            });
        }
        for (tid, vintages) in vintages? {
            for v in vintages {
                out.push(ListedFile {
                    tid: tid.clone(),
                    key: v.key,
                    size: v.size,
                    version: None,
                    vintage: Some((v.valid_from, v.valid_to)),
                });
            }
        }
        Ok(out)
    }

    /// The facts cache holding the facts of `files` that can be trusted
    /// later (vintages, and current partitions with a version), to be
    /// written: `None` when the cached ones are the same.
    fn facts_write(
        &self,
        table: &TableId,
        files: &[DataFile],
        known: &FileFacts,
    ) -> Result<Option<(String, Vec<u8>)>, Error> {
        let facts = FileFacts {
            files: files
                .iter()
                .filter(|f| f.valid_to.is_some() || f.version.is_some())
                .map(|f| {
                    let current = f.valid_to.is_none();
                    let facts = Facts {
                        size: f.size,
                        rows: f.rows,
                        columns: f.columns.clone(),
                        version: f.version.clone().filter(|_| current),
                        valid_from: f.valid_from.clone().filter(|_| current),
                    };
                    (f.key.clone(), facts)
                })
                .collect(),
        };
        if facts.files.is_empty() || facts == *known {
            return Ok(None);
        }
        let body = serde_json::to_vec(&facts).map_err(|e| Error::Iceberg {
            table: table.clone(),
            message: e.to_string(),
        })?;
        let key = format!("{}/{FACTS_FILE}", self.iceberg_metadata_key(table));
        Ok(Some((key, body)))
    }
}

/// A listed file with the facts its footer holds.
fn data_file(storage: &Storage, table: &TableId, listed: &ListedFile) -> Result<DataFile, Error> {
    let footer = read_footer_sized(storage, &listed.key, listed.size)?.ok_or_else(|| {
        Error::MissingPartition {
            table: table.clone(),
            tid: listed.tid.clone(),
            path: storage.display_key(&listed.key),
        }
    })?;
    Ok(listed.data_file(footer.rows, footer.columns, footer.valid_from))
}

/// A snapshot as its manifest list records it.
#[derive(Clone, Copy)]
struct ListedSnapshot<'a, 'f> {
    snapshot: i64,
    parent: Option<i64>,
    sequence: i64,
    files: &'a [&'f DataFile],
}

/// Writes one table's metadata folder.
struct MetadataWriter<'a> {
    storage: &'a Storage,
    table: &'a TableId,
    /// `statbank_tables/_iceberg/<TABLE_ID>/metadata`.
    dir: String,
    /// The absolute form of a key: a local path, or an object URL.
    root: Option<PathBuf>,
}

impl<'a> MetadataWriter<'a> {
    fn new(store: &'a PartitionStore, table: &'a TableId) -> Result<MetadataWriter<'a>, Error> {
        let storage = store.storage();
        let root = match storage.local_root() {
            Some(r) => Some(std::fs::canonicalize(r).map_err(|e| Error::Io {
                path: r.to_path_buf(),
                source: e,
            })?),
            None => None,
        };
        Ok(MetadataWriter {
            storage,
            table,
            dir: store.iceberg_metadata_key(table),
            root,
        })
    }

    /// A key as Iceberg names it: an absolute path or an object URL.
    fn absolute(&self, key: &str) -> String {
        match &self.root {
            Some(root) => root.join(key).display().to_string(),
            None => self.storage.display_key(key),
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}/{name}", self.dir)
    }

    /// JSON text of a record (in a manifest's header, or a property).
    fn json<T: Serialize + ?Sized>(&self, value: &T) -> Result<String, Error> {
        serde_json::to_string(value).map_err(|e| self.error(e.to_string()))
    }

    fn error(&self, message: impl Into<String>) -> Error {
        Error::Iceberg {
            table: self.table.clone(),
            message: message.into(),
        }
    }

    /// The version `version-hint.text` names and its metadata, if any.
    fn current(&self) -> Result<Option<(u64, TableMetadata)>, Error> {
        let Some(hint) = self.storage.get(&self.key(VERSION_HINT))? else {
            return Ok(None);
        };
        let n: u64 = std::str::from_utf8(&hint)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| self.error(format!("unreadable {VERSION_HINT}")))?;
        let name = metadata_name(n);
        let bytes = self
            .storage
            .get(&self.key(&name))?
            .ok_or_else(|| self.error(format!("{VERSION_HINT} names {name}, which is missing")))?;
        let meta = serde_json::from_slice(&bytes)
            .map_err(|e| self.error(format!("unreadable {name}: {e}")))?;
        Ok(Some((n, meta)))
    }

    /// The metadata describing `planned`, writing the manifests it needs
    /// (adding their bytes to `bytes`). Field and schema ids follow those
    /// of `previous`.
    fn describe(
        &self,
        planned: &[PlannedSnapshot<'_>],
        previous: Option<&TableMetadata>,
        writes: &mut Vec<(String, Vec<u8>)>,
    ) -> Result<TableMetadata, Error> {
        let mut schemas = Schemas::from_previous(previous);
        // Manifest lists the current version names exist (they are named by
        // what they list): no need to look.
        let existing: BTreeSet<&str> = previous
            .into_iter()
            .flat_map(|m| &m.snapshots)
            .map(|s| s.manifest_list.as_str())
            .collect();
        let mut snapshots = Vec::with_capacity(planned.len());
        let mut parent = None;
        for (i, p) in planned.iter().enumerate() {
            let columns = p.files.first().map(|f| f.columns.as_slice()).unwrap_or(&[]);
            let schema_id = schemas.schema_for(columns);
            let sequence = i64::try_from(i + 1).unwrap_or(i64::MAX);
            let id = snapshot_id(self.table, &p.at);
            let timestamp_ms = sync_state::source_time_to_utc(&p.at)
                .map(|t| t.timestamp_millis())
                .ok_or_else(|| self.error(format!("bad instant {}", p.at)))?;
            let list = ListedSnapshot {
                snapshot: id,
                parent,
                sequence,
                files: &p.files,
            };
            let list = self.manifest_list(&list, &schemas.get(schema_id), &existing, writes)?;
            let rows: u64 = p.files.iter().map(|f| f.rows).sum();
            let summary = BTreeMap::from([
                ("operation".to_string(), "overwrite".to_string()),
                ("statbank-updated".to_string(), p.at.clone()),
                ("total-data-files".to_string(), p.files.len().to_string()),
                ("total-records".to_string(), rows.to_string()),
                ("total-delete-files".to_string(), "0".to_string()),
            ]);
            snapshots.push(Snapshot {
                snapshot_id: id,
                parent_snapshot_id: parent,
                sequence_number: sequence,
                timestamp_ms,
                manifest_list: self.absolute(&list),
                summary,
                schema_id,
            });
            parent = Some(id);
        }
        let current = snapshots
            .last()
            .ok_or_else(|| self.error("no snapshot to describe"))?;
        let tid_id = schemas
            .id_of(TIME_COLUMN)
            .ok_or_else(|| self.error(format!("no {TIME_COLUMN} column in the partitions")))?;
        Ok(TableMetadata {
            format_version: 2,
            table_uuid: table_uuid(self.table),
            location: self.absolute(
                self.dir
                    .trim_end_matches(&format!("/{ICEBERG_METADATA_DIR}")),
            ),
            last_sequence_number: current.sequence_number,
            last_updated_ms: 0,
            last_column_id: schemas.last_column_id,
            current_schema_id: current.schema_id,
            schemas: schemas.list.clone(),
            default_spec_id: 0,
            partition_specs: vec![PartitionSpec {
                spec_id: 0,
                fields: vec![partition_field(tid_id)],
            }],
            last_partition_id: PARTITION_FIELD_ID,
            default_sort_order_id: 0,
            sort_orders: vec![SortOrder {
                order_id: 0,
                fields: Vec::new(),
            }],
            properties: properties(self.json(&schemas.name_mapping())?),
            current_snapshot_id: Some(current.snapshot_id),
            refs: BTreeMap::from([(
                "main".to_string(),
                SnapshotRef {
                    snapshot_id: current.snapshot_id,
                    kind: "branch".into(),
                },
            )]),
            snapshot_log: snapshots
                .iter()
                .map(|s| SnapshotLogEntry {
                    timestamp_ms: s.timestamp_ms,
                    snapshot_id: s.snapshot_id,
                })
                .collect(),
            snapshots,
            metadata_log: Vec::new(),
        })
    }

    /// The key of one snapshot's manifest list, adding it and its manifest
    /// to `writes` unless it exists: both are named by a digest of what
    /// they list.
    fn manifest_list(
        &self,
        listed: &ListedSnapshot<'_, '_>,
        schema: &IcebergSchema,
        existing: &BTreeSet<&str>,
        writes: &mut Vec<(String, Vec<u8>)>,
    ) -> Result<String, Error> {
        let ListedSnapshot {
            snapshot,
            parent,
            sequence,
            files,
        } = *listed;
        let entries: Vec<(String, &DataFile)> =
            files.iter().map(|f| (self.absolute(&f.key), *f)).collect();
        let mut content = format!("{snapshot} {sequence} {}\n", schema.schema_id);
        for (path, f) in &entries {
            content.push_str(&format!("{path}\t{}\t{}\t{}\n", f.size, f.rows, f.tid));
        }
        let digest = format!("{:016x}", xxh3_64(content.as_bytes()));
        let list_key = self.key(&format!("snap-{snapshot}-{digest}.{AVRO_EXT}"));
        if existing.contains(self.absolute(&list_key).as_str()) {
            return Ok(list_key);
        }
        // Not named by the current version: written (again, if a killed
        // run left it; the same content under the same name).
        let mut manifests = Vec::new();
        if !entries.is_empty() {
            let manifest_key = self.key(&format!("{digest}-m0.{AVRO_EXT}"));
            let avro = self.manifest(snapshot, sequence, &entries, schema)?;
            manifests.push(manifest_file(
                self.absolute(&manifest_key),
                avro.len() as u64,
                snapshot,
                sequence,
                files,
            ));
            writes.push((manifest_key, avro));
        }
        let mut meta = vec![
            ("snapshot-id", snapshot.to_string()),
            ("sequence-number", sequence.to_string()),
            ("format-version", "2".to_string()),
        ];
        if let Some(p) = parent {
            meta.push(("parent-snapshot-id", p.to_string()));
        }
        let avro = self.avro(MANIFEST_LIST_SCHEMA, &meta, manifests)?;
        writes.push((list_key.clone(), avro));
        Ok(list_key)
    }

    /// A manifest listing `entries` as added in `snapshot`.
    fn manifest(
        &self,
        snapshot: i64,
        sequence: i64,
        entries: &[(String, &DataFile)],
        schema: &IcebergSchema,
    ) -> Result<Vec<u8>, Error> {
        let tid_id = schema
            .fields
            .iter()
            .find(|f| f.name == TIME_COLUMN)
            .map(|f| f.id)
            .ok_or_else(|| self.error(format!("no {TIME_COLUMN} column in the partitions")))?;
        let meta = vec![
            ("schema", self.json(schema)?),
            ("schema-id", schema.schema_id.to_string()),
            ("partition-spec", self.json(&[partition_field(tid_id)])?),
            ("partition-spec-id", "0".to_string()),
            ("format-version", "2".to_string()),
            ("content", "data".to_string()),
        ];
        let records = entries
            .iter()
            .map(|(path, f)| manifest_entry(path, f, snapshot, sequence))
            .collect();
        self.avro(MANIFEST_SCHEMA, &meta, records)
    }

    /// An Avro object container file (deflate: DuckDB reads no zstd
    /// manifests).
    fn avro(
        &self,
        schema: &str,
        meta: &[(&str, String)],
        records: Vec<Avro>,
    ) -> Result<Vec<u8>, Error> {
        let avro_err = |e: apache_avro::Error| self.error(format!("avro: {e}"));
        let schema = AvroSchema::parse_str(schema).map_err(avro_err)?;
        let mut w = Writer::with_codec(
            &schema,
            Vec::new(),
            Codec::Deflate(DeflateSettings::default()),
        );
        for (k, v) in meta {
            w.add_user_metadata((*k).to_string(), v.as_bytes())
                .map_err(avro_err)?;
        }
        for r in records {
            w.append(r).map_err(avro_err)?;
        }
        w.into_inner().map_err(avro_err)
    }

    /// The next version number, with the metadata log of `meta` carrying
    /// the versions still within the grace period; returns the version and
    /// the metadata files whose grace has passed.
    fn log_versions(
        &self,
        meta: &mut TableMetadata,
        current: Option<&(u64, TableMetadata)>,
        highest: u64,
        opts: &IcebergOptions,
    ) -> (u64, Vec<String>) {
        let Some((n, cur)) = current else {
            return (highest + 1, Vec::new());
        };
        let mut log = cur.metadata_log.clone();
        log.push(MetadataLogEntry {
            timestamp_ms: cur.last_updated_ms,
            metadata_file: self.absolute(&self.key(&metadata_name(*n))),
        });
        // A version is superseded when the next one was written.
        let mut superseded: Vec<i64> = log.iter().skip(1).map(|e| e.timestamp_ms).collect();
        superseded.push(opts.now_ms);
        let mut kept = Vec::new();
        let mut expired = Vec::new();
        for (e, at) in log.into_iter().zip(superseded) {
            if at.saturating_add(opts.grace_ms) < opts.now_ms {
                expired.push(e.metadata_file);
            } else {
                kept.push(e);
            }
        }
        meta.metadata_log = kept;
        (highest.max(*n) + 1, expired)
    }

    /// What the metadata folder holds. Its listing says whether there is a
    /// hint and a facts cache to read at all (a table's first metadata
    /// reads nothing more), and the highest version present.
    fn stored(&self) -> Result<Stored, Error> {
        let listed = self.storage.list_dir(&self.dir)?;
        let has = |name: &str| listed.files.iter().any(|(n, _)| n == name);
        let highest = listed
            .files
            .iter()
            .filter_map(|(n, _)| parse_metadata_name(n))
            .max()
            .unwrap_or(0);
        let (known, current) = join(
            self.storage,
            || match has(FACTS_FILE) {
                true => self.facts(),
                false => FileFacts::default(),
            },
            || match has(VERSION_HINT) {
                true => self.current(),
                false => Ok(None),
            },
        );
        Ok(Stored {
            known,
            current: current?,
            highest,
        })
    }

    /// The cached footer facts (none when absent or unreadable).
    fn facts(&self) -> FileFacts {
        self.storage
            .get(&self.key(FACTS_FILE))
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// `v<version>.metadata.json` to be written.
    fn version_write(
        &self,
        version: u64,
        meta: &TableMetadata,
    ) -> Result<(String, Vec<u8>), Error> {
        let body = serde_json::to_vec_pretty(meta).map_err(|e| self.error(e.to_string()))?;
        Ok((self.key(&metadata_name(version)), body))
    }

    /// Names `version` in the hint: the version becomes current. Returns
    /// the bytes written.
    fn commit(&self, version: u64) -> Result<u64, Error> {
        let hint = version.to_string();
        self.storage.put(&self.key(VERSION_HINT), hint.as_bytes())?;
        sync_state::crash::point("iceberg version hint written");
        Ok(hint.len() as u64)
    }

    /// Removes the expired versions and every manifest no kept version
    /// references; returns how many files.
    fn collect_garbage(&self, meta: &TableMetadata, expired: &[String]) -> Result<usize, Error> {
        let expired: BTreeSet<String> = expired
            .iter()
            .filter_map(|abs| abs.rsplit('/').next().map(str::to_string))
            .collect();
        let listed = self.storage.list_dir(&self.dir)?;
        let mut keep: BTreeSet<String> = BTreeSet::new();
        let mut versions = vec![meta.clone()];
        for e in &meta.metadata_log {
            let name = e.metadata_file.rsplit('/').next().unwrap_or_default();
            if let Some(bytes) = self.storage.get(&self.key(name))? {
                if let Ok(m) = serde_json::from_slice::<TableMetadata>(&bytes) {
                    versions.push(m);
                }
            }
        }
        for m in &versions {
            for s in &m.snapshots {
                let list = s.manifest_list.rsplit('/').next().unwrap_or_default();
                keep.insert(list.to_string());
                if let Some(digest) = list
                    .strip_suffix(&format!(".{AVRO_EXT}"))
                    .and_then(|n| n.rsplit('-').next())
                {
                    keep.insert(format!("{digest}-m0.{AVRO_EXT}"));
                }
            }
        }
        let garbage: Vec<String> = listed
            .files
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| {
                let stale_manifest =
                    name.ends_with(&format!(".{AVRO_EXT}")) && !keep.contains(name);
                stale_manifest || expired.contains(name)
            })
            .collect();
        let removed = fan_out(self.storage, &garbage, |name| {
            self.storage.delete(&self.key(name)).map_err(Error::from)
        })?;
        Ok(removed.into_iter().filter(|&gone| gone).count())
    }
}

const AVRO_EXT: &str = "avro";

fn metadata_name(version: u64) -> String {
    format!("v{version}.metadata.json")
}

fn parse_metadata_name(name: &str) -> Option<u64> {
    name.strip_prefix('v')?
        .strip_suffix(".metadata.json")?
        .parse()
        .ok()
}

fn partition_field(source_id: i32) -> PartitionField {
    PartitionField {
        name: PARTITION_FIELD.to_string(),
        transform: "identity".into(),
        source_id,
        field_id: PARTITION_FIELD_ID,
    }
}

/// A snapshot's id: a positive hash of the table and the instant, so the
/// same snapshot has the same id in every regeneration.
fn snapshot_id(table: &TableId, at: &str) -> i64 {
    let h = xxh3_64(format!("statbank-sync snapshot {table} {at}").as_bytes());
    i64::try_from(h >> 1).unwrap_or(i64::MAX).max(1)
}

/// The table's uuid: a hash of its id, in the uuid text form (version 8,
/// "custom").
fn table_uuid(table: &TableId) -> String {
    let mut b = xxh3_128(format!("statbank-sync table {table}").as_bytes()).to_be_bytes();
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Field ids by column name (stable across versions: taken from the
/// previous version, new names get the next id) and the schemas so far.
struct Schemas {
    ids: BTreeMap<String, i32>,
    last_column_id: i32,
    list: Vec<IcebergSchema>,
}

impl Schemas {
    fn from_previous(previous: Option<&TableMetadata>) -> Schemas {
        let mut s = Schemas {
            ids: BTreeMap::new(),
            last_column_id: 0,
            list: Vec::new(),
        };
        if let Some(p) = previous {
            s.last_column_id = p.last_column_id;
            s.list = p.schemas.clone();
            for f in p.schemas.iter().flat_map(|sc| &sc.fields) {
                s.ids.insert(f.name.clone(), f.id);
            }
        }
        s
    }

    /// Every name ever given a field id, by id.
    fn name_mapping(&self) -> Vec<MappedField> {
        let mut by_id: Vec<MappedField> = self
            .ids
            .iter()
            .map(|(name, id)| MappedField {
                field_id: *id,
                names: vec![name.clone()],
            })
            .collect();
        by_id.sort_by_key(|m| m.field_id);
        by_id
    }

    fn id_of(&self, name: &str) -> Option<i32> {
        self.ids.get(name).copied()
    }

    fn get(&self, schema_id: i32) -> IcebergSchema {
        self.list
            .iter()
            .find(|s| s.schema_id == schema_id)
            .cloned()
            .unwrap_or_else(|| IcebergSchema {
                kind: "struct".into(),
                schema_id,
                fields: Vec::new(),
            })
    }

    /// The id of the schema with exactly these columns, added if new.
    fn schema_for(&mut self, columns: &[String]) -> i32 {
        let fields: Vec<SchemaField> = columns
            .iter()
            .map(|c| {
                let id = *self.ids.entry(c.clone()).or_insert_with(|| {
                    self.last_column_id += 1;
                    self.last_column_id
                });
                SchemaField {
                    id,
                    name: c.clone(),
                    // Optional throughout: files written by other tools
                    // may have nullable code columns.
                    required: false,
                    kind: if c == VALUE_COLUMN {
                        "double"
                    } else {
                        "string"
                    }
                    .into(),
                }
            })
            .collect();
        if let Some(s) = self.list.iter().find(|s| s.fields == fields) {
            return s.schema_id;
        }
        let schema_id = self.list.iter().map(|s| s.schema_id + 1).max().unwrap_or(0);
        self.list.push(IcebergSchema {
            kind: "struct".into(),
            schema_id,
            fields,
        });
        schema_id
    }
}

/// The table properties: read-only, the name mapping, and the reader
/// settings older files need.
fn properties(name_mapping: String) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("gc.enabled".to_string(), "false".to_string()),
        ("schema.name-mapping.default".to_string(), name_mapping),
        // Partitions written before the encodings changed use
        // BYTE_STREAM_SPLIT, which Iceberg's vectorized reader (<= 1.10)
        // cannot read.
        (
            "read.parquet.vectorization.enabled".to_string(),
            "false".to_string(),
        ),
        (
            "comment".to_string(),
            "Read-only: generated by statbank-sync from its mirror. Do not run Iceberg writers \
             or maintenance (expire snapshots, remove orphan files, compaction) on this table: \
             they would delete or replace the mirror's files."
                .to_string(),
        ),
        ("statbank-sync.read-only".to_string(), "true".to_string()),
    ])
}

fn long(v: i64) -> Avro {
    Avro::Long(v)
}

fn count(n: usize) -> Avro {
    Avro::Int(i32::try_from(n).unwrap_or(i32::MAX))
}

fn rows(n: u64) -> Avro {
    Avro::Long(i64::try_from(n).unwrap_or(i64::MAX))
}

fn some(v: Avro) -> Avro {
    Avro::Union(1, Box::new(v))
}

fn none() -> Avro {
    Avro::Union(0, Box::new(Avro::Null))
}

/// One `manifest_file` record.
fn manifest_file(
    path: String,
    size: u64,
    snapshot: i64,
    sequence: i64,
    files: &[&DataFile],
) -> Avro {
    let lower = files
        .iter()
        .map(|f| f.tid.as_str())
        .min()
        .unwrap_or_default();
    let upper = files
        .iter()
        .map(|f| f.tid.as_str())
        .max()
        .unwrap_or_default();
    let summary = Avro::Record(vec![
        ("contains_null".into(), Avro::Boolean(false)),
        ("contains_nan".into(), none()),
        (
            "lower_bound".into(),
            some(Avro::Bytes(lower.as_bytes().to_vec())),
        ),
        (
            "upper_bound".into(),
            some(Avro::Bytes(upper.as_bytes().to_vec())),
        ),
    ]);
    Avro::Record(vec![
        ("manifest_path".into(), Avro::String(path)),
        ("manifest_length".into(), rows(size)),
        ("partition_spec_id".into(), Avro::Int(0)),
        ("content".into(), Avro::Int(0)),
        ("sequence_number".into(), long(sequence)),
        ("min_sequence_number".into(), long(sequence)),
        ("added_snapshot_id".into(), long(snapshot)),
        ("added_files_count".into(), count(files.len())),
        ("existing_files_count".into(), Avro::Int(0)),
        ("deleted_files_count".into(), Avro::Int(0)),
        (
            "added_rows_count".into(),
            rows(files.iter().map(|f| f.rows).sum()),
        ),
        ("existing_rows_count".into(), Avro::Long(0)),
        ("deleted_rows_count".into(), Avro::Long(0)),
        ("partitions".into(), some(Avro::Array(vec![summary]))),
    ])
}

/// One `manifest_entry` record: the file, added in `snapshot`.
fn manifest_entry(path: &str, f: &DataFile, snapshot: i64, sequence: i64) -> Avro {
    let data_file = Avro::Record(vec![
        ("content".into(), Avro::Int(0)),
        ("file_path".into(), Avro::String(path.to_string())),
        ("file_format".into(), Avro::String("PARQUET".into())),
        (
            "partition".into(),
            Avro::Record(vec![(
                PARTITION_FIELD.into(),
                some(Avro::String(f.tid.as_str().to_string())),
            )]),
        ),
        ("record_count".into(), rows(f.rows)),
        ("file_size_in_bytes".into(), rows(f.size)),
    ]);
    Avro::Record(vec![
        ("status".into(), Avro::Int(ADDED)),
        ("snapshot_id".into(), some(long(snapshot))),
        ("sequence_number".into(), some(long(sequence))),
        ("file_sequence_number".into(), some(long(sequence))),
        ("data_file".into(), data_file),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(tid: &str, from: Option<&str>, to: Option<&str>) -> DataFile {
        DataFile {
            tid: Tid::new(tid).expect("tid"),
            key: format!("{tid}-{from:?}-{to:?}"),
            size: 1,
            version: None,
            rows: 1,
            columns: vec!["TID".into(), "INDHOLD".into()],
            valid_from: from.map(str::to_string),
            valid_to: to.map(str::to_string),
        }
    }

    const T1: &str = "2024-01-01T08:00:00";
    const T2: &str = "2024-04-01T08:00:00";
    const T3: &str = "2024-07-01T08:00:00";

    #[test]
    fn one_snapshot_per_change_with_the_files_published_then() {
        let files = vec![
            // 2023K4 revised at T2; 2024K1 new at T2; 2023K3 pruned at T3.
            file("2023K4", Some(T1), Some(T2)),
            file("2023K4", Some(T2), None),
            file("2024K1", Some(T2), None),
            file("2023K3", Some(T1), Some(T3)),
        ];
        let plan = plan_snapshots(&files, T3);
        let shape: Vec<(&str, Vec<&str>)> = plan
            .iter()
            .map(|p| {
                (
                    p.at.as_str(),
                    p.files.iter().map(|f| f.key.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(plan.len(), 3);
        assert_eq!(shape[0].0, T1);
        assert_eq!(plan[0].files, vec![&files[3], &files[0]]);
        assert_eq!(plan[1].files, vec![&files[3], &files[1], &files[2]]);
        assert_eq!(plan[2].files, vec![&files[1], &files[2]]);
    }

    #[test]
    fn files_without_validity_make_one_snapshot_at_the_tables_updated() {
        let files = vec![file("2024K1", None, None), file("2024K2", None, None)];
        let plan = plan_snapshots(&files, T2);
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].at, T2);
        assert_eq!(plan[0].files.len(), 2);
        assert!(plan_snapshots(&[], T2).is_empty());
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        let t = TableId::new("FOLK1A").expect("id");
        assert_eq!(snapshot_id(&t, T1), snapshot_id(&t, T1));
        assert_ne!(snapshot_id(&t, T1), snapshot_id(&t, T2));
        assert!(snapshot_id(&t, T1) > 0);
        let u = table_uuid(&t);
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "8");
        assert_ne!(u, table_uuid(&TableId::new("FOLK1AM").expect("id")));
    }

    #[test]
    fn field_ids_survive_a_new_column() {
        let mut s = Schemas::from_previous(None);
        let cols = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let a = s.schema_for(&cols(&["OMRÅDE", "TID", "INDHOLD"]));
        let b = s.schema_for(&cols(&["OMRÅDE", "KØN", "TID", "INDHOLD"]));
        assert_eq!((a, b), (0, 1));
        assert_eq!(s.id_of("TID"), Some(2));
        assert_eq!(s.id_of("KØN"), Some(4));
        assert_eq!(s.schema_for(&cols(&["OMRÅDE", "TID", "INDHOLD"])), 0);
    }

    #[test]
    fn metadata_names_round_trip() {
        assert_eq!(parse_metadata_name(&metadata_name(12)), Some(12));
        assert_eq!(parse_metadata_name("v1.metadata.json.tmp"), None);
    }

    fn listed(version: Option<&str>, vintage: bool) -> ListedFile {
        ListedFile {
            tid: Tid::new("2024K1").expect("tid"),
            key: "statbank_tables/T/2024K1.parquet".into(),
            size: 100,
            version: version.map(str::to_string),
            vintage: vintage.then(|| (Some(T1.to_string()), T2.to_string())),
        }
    }

    fn facts(size: u64, version: Option<&str>) -> Facts {
        Facts {
            size,
            rows: 7,
            columns: vec!["TID".into()],
            version: version.map(str::to_string),
            valid_from: Some(T1.into()),
        }
    }

    #[test]
    fn cached_facts_hold_while_the_file_is_the_same() {
        // A vintage is never replaced: its size suffices.
        let v = listed(None, true)
            .with_facts(&facts(100, None))
            .expect("vintage");
        assert_eq!((v.rows, v.valid_to.as_deref()), (7, Some(T2)));
        assert!(listed(None, true).with_facts(&facts(99, None)).is_none());
        // A current partition is replaced in place: its version must match.
        let c = listed(Some("e1"), false).with_facts(&facts(100, Some("e1")));
        assert_eq!(
            c.map(|f| (f.rows, f.valid_from)),
            Some((7, Some(T1.into())))
        );
        assert!(listed(Some("e2"), false)
            .with_facts(&facts(100, Some("e1")))
            .is_none());
        // Without a listed version (a local folder) nothing is trusted.
        assert!(listed(None, false).with_facts(&facts(100, None)).is_none());
    }

    #[test]
    fn a_cache_written_before_versions_were_recorded_still_reads() {
        let old = r#"{"files":{"k":{"size":1,"rows":2,"columns":["TID"]}}}"#;
        let f: FileFacts = serde_json::from_str(old).expect("old cache");
        assert_eq!(f.files["k"].version, None);
    }
}
