//! The layout of a data folder ([docs/layout.md](../../docs/layout.md)), as
//! storage keys that are the same on a local folder and an object store.

use std::path::PathBuf;
use std::sync::Arc;

use crate::storage::{DataDirLock, Storage, WriteGuard};
use crate::{Error, RunId, TableId, Tid};

/// The partitions' root folder, under the data folder.
pub const TABLES_DIR: &str = "statbank_tables";
/// The sync control folder (state, manifests, intents, staging, lock),
/// under the partitions' root; never a table.
pub const SYNC_DIR: &str = "_sync";
/// The vintages folder, under the partitions' root; never a table.
pub const VINTAGES_DIR: &str = "_vintages";
/// The archive of tables gone from the catalog (`--vanished-tables
/// archive`), under the partitions' root; never a table.
pub const ARCHIVE_DIR: &str = "_archive";
/// The Iceberg metadata of the tables (`--iceberg`), under the partitions'
/// root; never a table.
pub const ICEBERG_DIR: &str = "_iceberg";
/// The cached tableinfo and other metadata, under the data folder.
pub const METADATA_DIR: &str = "metadata";
/// The extension of partition and vintage files.
pub const PARTITION_EXT: &str = "parquet";
/// Every temp file of this project starts with this prefix (`.tmp-<random>…`):
/// hidden, never a partition or a record, and removed when a process died
/// before renaming it.
pub const TEMP_PREFIX: &str = ".tmp-";

const TABLES: &str = TABLES_DIR;
const SYNC: &str = "statbank_tables/_sync";

#[cfg(test)]
#[test]
fn the_sync_key_is_the_sync_dir_under_the_tables_root() {
    assert_eq!(SYNC, format!("{TABLES_DIR}/{SYNC_DIR}"));
}

/// The keys of one data folder (`data/dst` by default, or an object-store
/// prefix such as `s3://bucket/dst`):
///
/// ```text
/// statbank_tables/<TABLE_ID>/<urlquoted_tid>.parquet
/// statbank_tables/_vintages/<TABLE_ID>/<urlquoted_tid>/<from>--<to>.parquet
/// statbank_tables/_iceberg/<TABLE_ID>/metadata/v<N>.metadata.json (and
///   version-hint.text, manifests)
/// statbank_tables/_sync/state.json
/// statbank_tables/_sync/runs/<run_id>.json
/// statbank_tables/_sync/frequency_overrides.json
/// statbank_tables/_sync/intents/<TABLE_ID>.json
/// statbank_tables/_sync/staging/<TABLE_ID>/<set id>/…
/// statbank_tables/_sync/lock
/// metadata/tables_info_raw_<da|en>/<TABLE_ID>.json
/// metadata/labels/<TABLE_ID>.parquet
/// metadata/subjects_<da|en>.json
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    storage: Storage,
}

impl DataDir {
    /// A local data folder rooted at `root` (always a folder, whatever the
    /// text: `DataDir::open` reads a location that may be a URL).
    pub fn local(root: impl Into<PathBuf>) -> DataDir {
        DataDir {
            storage: Storage::local(root),
        }
    }

    /// A data folder at a local path or an object-store URL
    /// (`s3://bucket/prefix`, `gs://…`, `az://…`); see [`Storage::parse`].
    pub fn open(location: &str) -> Result<DataDir, Error> {
        Ok(DataDir {
            storage: Storage::parse(location)?,
        })
    }

    /// [`DataDir::open`] with object-store settings given in code (see
    /// [`Storage::parse_with`]).
    pub fn open_with(location: &str, options: &[(String, String)]) -> Result<DataDir, Error> {
        Ok(DataDir {
            storage: Storage::parse_with(location, options)?,
        })
    }

    /// A data folder on `storage`.
    pub fn on(storage: Storage) -> DataDir {
        DataDir { storage }
    }

    /// The storage every record and partition goes through.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The local folder, if this data folder is local.
    pub fn local_root(&self) -> Option<&std::path::Path> {
        self.storage.local_root()
    }

    /// The location as given (a path or a URL).
    pub fn describe(&self) -> String {
        self.storage.describe()
    }

    /// How a key is shown to a person (a path, or the object's URL).
    pub fn display_key(&self, key: &str) -> String {
        self.storage.display_key(key)
    }

    /// Takes the data folder's lock (`flock` locally, a lease on an object
    /// store) and returns it with a copy of this data folder whose every
    /// write checks that the lock is still held.
    pub fn lock(&self, note: &str) -> Result<(DataDirLock, DataDir), Error> {
        let lock = DataDirLock::acquire(&self.storage, &self.lock_key(), note)?;
        let guarded = match lock.guard() {
            Some(g) => self.guarded(g),
            None => self.clone(),
        };
        Ok((lock, guarded))
    }

    /// This data folder with `guard` asked before every write.
    pub fn guarded(&self, guard: Arc<dyn WriteGuard>) -> DataDir {
        DataDir {
            storage: self.storage.guarded(guard),
        }
    }

    /// `statbank_tables`, the root of the partitions.
    pub fn tables_key(&self) -> String {
        TABLES.to_string()
    }

    /// `statbank_tables/<TABLE_ID>`.
    pub fn table_key(&self, table: &TableId) -> String {
        format!("{TABLES}/{table}")
    }

    /// `statbank_tables/<TABLE_ID>/<urlquoted_tid>.parquet`.
    pub fn partition_key(&self, table: &TableId, tid: &Tid) -> String {
        format!("{TABLES}/{table}/{}.{PARTITION_EXT}", tid.file_stem())
    }

    /// `statbank_tables/_vintages/<TABLE_ID>`.
    pub fn vintages_key(&self, table: &TableId) -> String {
        format!("{TABLES}/{VINTAGES_DIR}/{table}")
    }

    /// `statbank_tables/_iceberg/<TABLE_ID>`: the table's Iceberg metadata
    /// (`--iceberg`).
    pub fn iceberg_key(&self, table: &TableId) -> String {
        format!("{TABLES}/{ICEBERG_DIR}/{table}")
    }

    /// `statbank_tables/_iceberg`.
    pub fn iceberg_root_key(&self) -> String {
        format!("{TABLES}/{ICEBERG_DIR}")
    }

    /// `statbank_tables/_archive/<TABLE_ID>/<run_id>`: where `--vanished-tables
    /// archive` moves a table's partitions.
    pub fn archive_key(&self, table: &TableId, run: &RunId) -> String {
        format!("{TABLES}/{ARCHIVE_DIR}/{table}/{run}")
    }

    /// `statbank_tables/_sync/state.json`.
    pub fn state_key(&self) -> String {
        format!("{SYNC}/state.json")
    }

    /// `statbank_tables/_sync/runs`.
    pub fn runs_key(&self) -> String {
        format!("{SYNC}/runs")
    }

    /// `statbank_tables/_sync/runs/<run_id>.json`.
    pub fn manifest_key(&self, run: &RunId) -> String {
        format!("{SYNC}/runs/{run}.json")
    }

    /// `statbank_tables/_sync/frequency_overrides.json`.
    pub fn overrides_key(&self) -> String {
        format!("{SYNC}/frequency_overrides.json")
    }

    /// `statbank_tables/_sync/intents`: one record per table with a
    /// multi-file publish in progress.
    pub fn intents_key(&self) -> String {
        format!("{SYNC}/intents")
    }

    /// `statbank_tables/_sync/staging`: new partition sets being built.
    pub fn staging_key(&self) -> String {
        format!("{SYNC}/staging")
    }

    /// `statbank_tables/_sync/reconcile`: one report per reconcile.
    pub fn reconcile_key(&self) -> String {
        format!("{SYNC}/reconcile")
    }

    /// `statbank_tables/_sync/reconcile/<id>.json`.
    pub fn reconcile_report_key(&self, id: &RunId) -> String {
        format!("{SYNC}/reconcile/{id}.json")
    }

    /// `statbank_tables/_sync/lock`, held while a cycle runs.
    pub fn lock_key(&self) -> String {
        format!("{SYNC}/lock")
    }

    /// `metadata/tables_info_raw_da`.
    pub fn metadata_key(&self) -> String {
        self.metadata_key_in(crate::tableinfo::Lang::Da)
    }

    /// `metadata/tables_info_raw_<lang>`.
    pub fn metadata_key_in(&self, lang: crate::tableinfo::Lang) -> String {
        format!("{METADATA_DIR}/tables_info_raw_{lang}")
    }

    /// `metadata/tables_info_raw_da/<TABLE_ID>.json`.
    pub fn metadata_file_key(&self, table: &TableId) -> String {
        self.metadata_file_key_in(table, crate::tableinfo::Lang::Da)
    }

    /// `metadata/subjects_<lang>.json`: the subject tree, with its tables.
    pub fn subjects_key(&self, lang: crate::tableinfo::Lang) -> String {
        format!("{METADATA_DIR}/subjects_{lang}.json")
    }

    /// `metadata/labels`.
    pub fn labels_key(&self) -> String {
        format!("{METADATA_DIR}/labels")
    }

    /// `metadata/labels/<TABLE_ID>.parquet`: the labels of the table's
    /// codes in every language.
    pub fn labels_file_key(&self, table: &TableId) -> String {
        format!("{METADATA_DIR}/labels/{table}.parquet")
    }

    /// `metadata/tables_info_raw_<lang>/<TABLE_ID>.json`.
    pub fn metadata_file_key_in(&self, table: &TableId, lang: crate::tableinfo::Lang) -> String {
        format!("{METADATA_DIR}/tables_info_raw_{lang}/{table}.json")
    }

    /// The local path of a key (for a local data folder), for messages and
    /// tools that need a file.
    pub fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.local_root().map(|r| r.join(key))
    }

    /// Reads a JSON record; `Ok(None)` when absent, [`Error::Corrupt`]
    /// naming the file when it does not parse.
    pub fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        what: &'static str,
    ) -> Result<Option<T>, Error> {
        match self.storage.get(key)? {
            None => Ok(None),
            Some(bytes) => crate::fsio::decode_json(&bytes, what, &self.display_key(key)).map(Some),
        }
    }

    /// Reads a JSON record keyed by table id (`state.json`, a manifest):
    /// entries of its `tables` map whose key is not a valid [`TableId`]
    /// (written by a version that accepted more ids) are set aside under
    /// `invalid_table_ids`, which is kept and written back as it was, so the
    /// record still loads and nothing in it is lost.
    pub(crate) fn read_table_record<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        what: &'static str,
    ) -> Result<Option<T>, Error> {
        let Some(mut value) = self.read_json::<serde_json::Value>(key, what)? else {
            return Ok(None);
        };
        set_aside_invalid_table_ids(&mut value, &self.display_key(key));
        serde_json::from_value(value)
            .map(Some)
            .map_err(|source| Error::Corrupt {
                what,
                path: self.display_key(key),
                source,
            })
    }

    /// Writes a JSON record atomically and durably.
    pub fn write_json<T: serde::Serialize>(
        &self,
        key: &str,
        what: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.storage
            .put(key, &crate::fsio::encode_json(value, what)?)
    }

    /// Removes temp files of the JSON records that an interrupted run left
    /// (local folders; call only while holding the lock).
    pub fn clean_temp_files(&self) {
        let languages = crate::tableinfo::Lang::ALL.map(|l| self.metadata_key_in(l));
        let metadata = [METADATA_DIR.to_string(), self.labels_key()];
        for key in [SYNC.to_string(), self.runs_key(), self.intents_key()]
            .into_iter()
            .chain(metadata)
            .chain(languages)
        {
            self.storage.clean_temp_files(&key);
        }
    }
}

/// Where [`DataDir::read_table_record`] keeps entries with invalid ids.
pub(crate) const INVALID_TABLE_IDS_KEY: &str = "invalid_table_ids";

fn set_aside_invalid_table_ids(record: &mut serde_json::Value, location: &str) {
    let Some(tables) = record.get_mut("tables").and_then(|t| t.as_object_mut()) else {
        return;
    };
    let bad: Vec<String> = tables
        .keys()
        .filter(|k| crate::TableId::new(k.as_str()).is_err())
        .cloned()
        .collect();
    if bad.is_empty() {
        return;
    }
    let moved: serde_json::Map<String, serde_json::Value> = bad
        .iter()
        .filter_map(|k| tables.remove(k).map(|v| (k.clone(), v)))
        .collect();
    tracing::warn!(location, ids = ?bad, "entries with ids that are no longer valid table ids are kept aside under {INVALID_TABLE_IDS_KEY}");
    if let Some(obj) = record.as_object_mut() {
        let aside = obj
            .entry(INVALID_TABLE_IDS_KEY)
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        if let Some(a) = aside.as_object_mut() {
            a.extend(moved);
        }
    }
}
