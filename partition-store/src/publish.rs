//! The one publish path for change over time, on both backends: periods
//! replaced in place, periods removed, and a whole table's set of
//! partitions swapped for a new one (schema change), each optionally keeping
//! what it supersedes as a vintage.
//!
//! Every step that touches more than one object writes an *intent* first
//! (`statbank_tables/_sync/intents/<TABLE_ID>.json`), performs it, then
//! removes the intent. A run that starts and finds an intent settles it
//! before anything else ([`PartitionStore::recover`]):
//!
//! - **replace** (vintages on): an entry whose partition already holds the
//!   new content keeps its vintage; one whose partition still holds the old
//!   content had its new file lost with the crash, so its premature vintage
//!   is removed (the table is re-synced, and the change re-published).
//! - **remove** and **swap** roll forward: the decision was made and
//!   journaled; only the moves remain.
//!
//! A swap builds the complete new set aside under
//! `statbank_tables/_sync/staging/<TABLE_ID>/<set id>/` first. On a local
//! folder the two folders are then exchanged with one
//! `renameat2(RENAME_EXCHANGE)`: readers see the whole old set or the whole
//! new one, never a mix, at every instant and after a crash. An object
//! store cannot change several objects at once: the new objects are copied
//! into place one by one, so a mixed set is visible only while the swap
//! runs, and a crash leaves an intent that the next run rolls forward before
//! it does anything else.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sync_state::{Storage, TableId, Tid};

use crate::file_writer::StagedFile;
use crate::request::StagedPeriod;
use crate::store::list_set;
use crate::{Error, PartitionStore};

/// Marks a local folder as the set built by a swap (hidden: readers that
/// glob `*.parquet` never see it).
const SET_MARKER: &str = ".statbank-set";

/// A set of one table's partitions: its current folder, or a new set being
/// built aside for a swap ([`PartitionStore::new_set`]).
#[derive(Debug, Clone)]
pub struct TableSet {
    store: PartitionStore,
    table: TableId,
    prefix: String,
    staging_id: Option<String>,
}

impl TableSet {
    /// The table.
    pub fn table(&self) -> &TableId {
        &self.table
    }

    /// The storage underneath.
    pub fn storage(&self) -> &Storage {
        self.store.storage()
    }

    /// The key of `tid`'s partition in this set.
    pub fn key(&self, tid: &Tid) -> String {
        format!(
            "{}/{}.{}",
            self.prefix,
            tid.file_stem(),
            sync_state::PARTITION_EXT
        )
    }

    /// Whether this is a new set being built aside.
    pub fn is_staging(&self) -> bool {
        self.staging_id.is_some()
    }

    /// The periods in this set.
    pub fn list_tids(&self) -> Result<BTreeSet<Tid>, Error> {
        list_set(self.storage(), &self.prefix)
    }

    pub(crate) fn scratch_dir(&self) -> Result<PathBuf, Error> {
        Ok(self.storage().scratch_dir(&self.prefix)?)
    }
}

/// How superseded content is treated when publishing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishOptions {
    /// Keep superseded partitions as vintages, valid until this catalog
    /// `updated` (the cycle's). `None`: overwrite them.
    pub vintages_until: Option<String>,
}

/// What a swap did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SwapOutcome {
    /// The periods of the new set.
    pub new_tids: BTreeSet<Tid>,
    /// Periods of the old set that the new one does not have.
    pub removed_tids: BTreeSet<Tid>,
}

/// What [`PartitionStore::recover`] settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The table.
    pub table: TableId,
    /// `replace`, `remove` or `swap`.
    pub kind: &'static str,
    /// What was done, in words.
    pub action: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Intent {
    /// Periods replaced in place with vintages kept.
    Replace { entries: Vec<ReplaceEntry> },
    /// Periods removed (kept as vintages when `vintage` is set).
    Remove { entries: Vec<RemoveEntry> },
    /// The whole set swapped for the one at `staging`.
    Swap {
        set_id: String,
        staging: String,
        new_tids: Vec<Tid>,
        old: Vec<RemoveEntry>,
        /// Object stores only: the old set's vintages are all copied.
        #[serde(default)]
        vintaged: bool,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ReplaceEntry {
    tid: Tid,
    digest: String,
    vintage: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RemoveEntry {
    tid: Tid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vintage: Option<String>,
}

impl PartitionStore {
    /// The current partitions of `table`.
    pub fn current_set(&self, table: &TableId) -> TableSet {
        TableSet {
            store: self.clone(),
            table: table.clone(),
            prefix: self.data_dir().table_key(table),
            staging_id: None,
        }
    }

    /// A new, empty set for `table`, built aside under
    /// `_sync/staging/<TABLE_ID>/<id>/` and swapped in whole by
    /// [`PartitionStore::commit_set`]. `id` must be unique per attempt (a
    /// run id does).
    pub fn new_set(&self, table: &TableId, id: &str) -> Result<TableSet, Error> {
        let safe: String = id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
            .take(64)
            .collect();
        let prefix = format!("{}/{table}/{safe}", self.data_dir().staging_key());
        // A leftover of an attempt with the same id is never mixed in.
        self.storage().delete_prefix(&prefix)?;
        Ok(TableSet {
            store: self.clone(),
            table: table.clone(),
            prefix,
            staging_id: Some(safe),
        })
    }

    fn intent_key(&self, table: &TableId) -> String {
        format!("{}/{table}.json", self.data_dir().intents_key())
    }

    fn write_intent(&self, table: &TableId, intent: &Intent) -> Result<(), Error> {
        Ok(self
            .data_dir()
            .write_json(&self.intent_key(table), "publish intent", intent)?)
    }

    fn clear_intent(&self, table: &TableId) -> Result<(), Error> {
        self.storage().delete(&self.intent_key(table))?;
        Ok(())
    }

    /// Removes periods of `table` (gone at the source), keeping each as a
    /// vintage when `opts` says so. Journaled: a crash midway is rolled
    /// forward by the next run.
    pub fn remove_periods(
        &self,
        table: &TableId,
        tids: &[Tid],
        opts: &PublishOptions,
    ) -> Result<Vec<Tid>, Error> {
        let set = self.current_set(table);
        let mut entries = Vec::new();
        for tid in tids {
            let Some(footer) = crate::store::read_footer(self.storage(), &set.key(tid))? else {
                continue;
            };
            let vintage = opts
                .vintages_until
                .as_deref()
                .map(|to| self.vintage_key(table, tid, footer.valid_from.as_deref(), to))
                .transpose()?;
            entries.push(RemoveEntry {
                tid: tid.clone(),
                vintage,
            });
        }
        self.journaled_remove(&set, &entries)?;
        Ok(entries.into_iter().map(|e| e.tid).collect())
    }

    fn roll_remove(&self, set: &TableSet, entries: &[RemoveEntry]) -> Result<(), Error> {
        let storage = self.storage();
        for e in entries {
            let key = set.key(&e.tid);
            match &e.vintage {
                Some(v) if storage.head(&key)?.is_some() => storage.rename(&key, v)?,
                _ => {
                    storage.delete(&key)?;
                }
            }
            sync_state::crash::point("period removed");
        }
        Ok(())
    }

    /// Moves every partition of `table` under `prefix` (a table gone from
    /// the catalog, archived on request). Journaled like a removal.
    pub fn archive_table(&self, table: &TableId, prefix: &str) -> Result<usize, Error> {
        let set = self.current_set(table);
        let entries: Vec<RemoveEntry> = set
            .list_tids()?
            .into_iter()
            .map(|tid| RemoveEntry {
                vintage: Some(format!(
                    "{prefix}/{}.{}",
                    tid.file_stem(),
                    sync_state::PARTITION_EXT
                )),
                tid,
            })
            .collect();
        self.journaled_remove(&set, &entries)?;
        self.storage()
            .remove_dir(&self.data_dir().table_key(table))?;
        Ok(entries.len())
    }

    /// Removes every partition and vintage of `table` (a table gone from the
    /// catalog, deleted on request).
    pub fn delete_table(&self, table: &TableId) -> Result<usize, Error> {
        let set = self.current_set(table);
        let entries: Vec<RemoveEntry> = set
            .list_tids()?
            .into_iter()
            .map(|tid| RemoveEntry { tid, vintage: None })
            .collect();
        self.journaled_remove(&set, &entries)?;
        self.storage()
            .delete_prefix(&self.data_dir().vintages_key(table))?;
        self.storage()
            .delete_prefix(&self.data_dir().table_key(table))?;
        Ok(entries.len())
    }

    fn journaled_remove(&self, set: &TableSet, entries: &[RemoveEntry]) -> Result<(), Error> {
        if entries.is_empty() {
            return Ok(());
        }
        self.write_intent(
            set.table(),
            &Intent::Remove {
                entries: entries.to_vec(),
            },
        )?;
        sync_state::crash::point("remove intent written");
        self.roll_remove(set, entries)?;
        self.clear_intent(set.table())
    }

    /// Swaps `table`'s current partitions for the complete set `new` (built
    /// with [`PartitionStore::new_set`]). Periods of the old set that `new`
    /// lacks leave with the old set; with vintages on, every old partition is
    /// kept as a vintage. See the module documentation for the guarantees.
    pub fn commit_set(&self, new: &TableSet, opts: &PublishOptions) -> Result<SwapOutcome, Error> {
        let (table, Some(set_id)) = (new.table(), new.staging_id.clone()) else {
            return Err(Error::Intent {
                table: new.table().clone(),
                message: "commit_set needs a set made by new_set".into(),
            });
        };
        let current = self.current_set(table);
        let new_tids = new.list_tids()?;
        let old_tids = current.list_tids()?;
        let mut old = Vec::with_capacity(old_tids.len());
        for tid in &old_tids {
            let vintage = match opts.vintages_until.as_deref() {
                Some(to) => {
                    let f = crate::store::read_footer(self.storage(), &current.key(tid))?;
                    let from = f.and_then(|f| f.valid_from);
                    Some(self.vintage_key(table, tid, from.as_deref(), to)?)
                }
                None => None,
            };
            old.push(RemoveEntry {
                tid: tid.clone(),
                vintage,
            });
        }
        if self.storage().can_exchange_dirs() {
            self.storage()
                .put(&format!("{}/{SET_MARKER}", new.prefix), set_id.as_bytes())?;
        }
        let intent = Intent::Swap {
            set_id,
            staging: new.prefix.clone(),
            new_tids: new_tids.iter().cloned().collect(),
            old,
            vintaged: false,
        };
        self.write_intent(table, &intent)?;
        sync_state::crash::point("swap intent written");
        self.roll_swap(table, intent)?;
        self.clear_intent(table)?;
        Ok(SwapOutcome {
            removed_tids: old_tids.difference(&new_tids).cloned().collect(),
            new_tids,
        })
    }

    fn roll_swap(&self, table: &TableId, intent: Intent) -> Result<(), Error> {
        let Intent::Swap {
            set_id,
            staging,
            new_tids,
            old,
            vintaged,
        } = intent
        else {
            return Ok(());
        };
        let storage = self.storage();
        let current = self.current_set(table);
        if storage.can_exchange_dirs() {
            let marker = storage.get(&format!("{}/{SET_MARKER}", current.prefix))?;
            if marker.as_deref() != Some(set_id.as_bytes()) {
                storage.exchange_dirs(&staging, &current.prefix)?;
                sync_state::crash::point("swap folders exchanged");
            }
            // The staging folder now holds the old set.
            let moved = TableSet {
                prefix: staging.clone(),
                ..current.clone()
            };
            self.roll_remove(&moved, &old)?;
            storage.delete_prefix(&staging)?;
        } else {
            if !vintaged {
                for e in &old {
                    if let Some(v) = &e.vintage {
                        if storage.head(&current.key(&e.tid))?.is_some() {
                            storage.copy(&current.key(&e.tid), v)?;
                        }
                    }
                }
                let intent = Intent::Swap {
                    set_id,
                    staging: staging.clone(),
                    new_tids: new_tids.clone(),
                    old: old.clone(),
                    vintaged: true,
                };
                self.write_intent(table, &intent)?;
                sync_state::crash::point("swap vintages kept");
            }
            let staged = TableSet {
                prefix: staging.clone(),
                ..current.clone()
            };
            for tid in &new_tids {
                if storage.head(&staged.key(tid))?.is_some() {
                    storage.copy(&staged.key(tid), &current.key(tid))?;
                    sync_state::crash::point("swap object copied");
                }
            }
            let keep: BTreeSet<&Tid> = new_tids.iter().collect();
            for e in &old {
                if !keep.contains(&e.tid) {
                    storage.delete(&current.key(&e.tid))?;
                }
            }
            storage.delete_prefix(&staging)?;
        }
        self.move_published(&staging, &current.prefix);
        Ok(())
    }

    /// Settles every publish that a crash interrupted (see the module
    /// documentation), then removes staging leftovers of sets that were never
    /// committed. Call it first in a run, while holding the lock.
    pub fn recover(&self) -> Result<Vec<Recovered>, Error> {
        let dir = self.data_dir();
        let mut out = Vec::new();
        let listing = self.storage().list_dir(&dir.intents_key())?;
        for (name, _) in &listing.files {
            let Some(stem) = name.strip_suffix(".json") else {
                continue;
            };
            let Ok(table) = TableId::new(stem) else {
                continue;
            };
            let key = self.intent_key(&table);
            let Some(intent) = dir.read_json::<Intent>(&key, "publish intent")? else {
                continue;
            };
            let r = self.settle(&table, intent)?;
            self.clear_intent(&table)?;
            tracing::warn!(table = %table, kind = r.kind, action = %r.action, "settled a publish interrupted by a crash");
            out.push(r);
        }
        let staging = self.storage().list_dir(&dir.staging_key())?;
        for t in &staging.dirs {
            let prefix = format!("{}/{t}", dir.staging_key());
            let n = self.storage().delete_prefix(&prefix)?;
            tracing::info!(staging = %prefix, objects = n, "removed a set that was never swapped in");
        }
        Ok(out)
    }

    fn settle(&self, table: &TableId, intent: Intent) -> Result<Recovered, Error> {
        let current = self.current_set(table);
        match intent {
            Intent::Replace { entries } => {
                let (mut kept, mut dropped) = (0, 0);
                for e in &entries {
                    let now = crate::store::read_footer(self.storage(), &current.key(&e.tid))?
                        .and_then(|f| f.digest);
                    if now.as_deref() == Some(e.digest.as_str()) {
                        kept += 1;
                    } else if self.storage().delete(&e.vintage)? {
                        dropped += 1;
                    }
                }
                Ok(Recovered {
                    table: table.clone(),
                    kind: "replace",
                    action: format!("{kept} vintages kept, {dropped} premature vintages removed"),
                })
            }
            Intent::Remove { entries } => {
                self.roll_remove(&current, &entries)?;
                Ok(Recovered {
                    table: table.clone(),
                    kind: "remove",
                    action: format!("{} periods removed", entries.len()),
                })
            }
            swap @ Intent::Swap { .. } => {
                self.roll_swap(table, swap)?;
                Ok(Recovered {
                    table: table.clone(),
                    kind: "swap",
                    action: "new set swapped in".into(),
                })
            }
        }
    }
}

/// Publishes staged files into `set`: straight into place for a new set or
/// without vintages; with vintages, the journaled replace.
pub(crate) fn publish_files(
    set: &TableSet,
    files: Vec<(Tid, StagedFile, String)>,
    comparison: &[StagedPeriod],
    opts: &PublishOptions,
) -> Result<(), Error> {
    let storage = set.storage();
    let vintages: BTreeMap<&Tid, String> = match (&opts.vintages_until, set.is_staging()) {
        (Some(to), false) => comparison
            .iter()
            .filter(|p| !p.unchanged)
            .filter_map(|p| {
                p.previous.as_ref().map(|f| {
                    set.store
                        .vintage_key(&set.table, &p.tid, f.valid_from.as_deref(), to)
                        .map(|k| (&p.tid, k))
                })
            })
            .collect::<Result<_, Error>>()?,
        _ => BTreeMap::new(),
    };
    if !vintages.is_empty() {
        let entries = files
            .iter()
            .filter_map(|(tid, _, digest)| {
                vintages.get(tid).map(|v| ReplaceEntry {
                    tid: tid.clone(),
                    digest: digest.clone(),
                    vintage: v.clone(),
                })
            })
            .collect();
        set.store
            .write_intent(&set.table, &Intent::Replace { entries })?;
        sync_state::crash::point("replace intent written");
    }
    for (tid, staged, _) in &files {
        let key = set.key(tid);
        if let Some(v) = vintages.get(tid) {
            storage.copy(&key, v)?;
            sync_state::crash::point("vintage kept, before publish");
        }
        storage.put_file(&key, &staged.temp)?;
        set.store.record_published(&key, staged);
    }
    if !vintages.is_empty() {
        set.store.clear_intent(&set.table)?;
    }
    Ok(())
}
