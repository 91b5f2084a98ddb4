//! Vintages: superseded partitions kept with their validity interval, and
//! reads of a table as it was published at a given instant.
//!
//! A partition's content is valid from the catalog `updated` of the cycle
//! that published it (footer key [`crate::VALID_FROM_KEY`]) until the
//! `updated` of the cycle that superseded it. `updated` is the source's
//! clock: Copenhagen local time without a zone, `YYYY-MM-DDTHH:MM:SS`, so
//! two of them compare as text. A vintage is stored at
//!
//! ```text
//! statbank_tables/_vintages/<TABLE_ID>/<urlquoted_tid>/<from>--<to>.parquet
//! ```
//!
//! with `from`/`to` in the compact form `20240812T080000` (`unknown` when
//! the superseded file predates validity records), so the interval is
//! readable without opening the file.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

use arrow_array::RecordBatch;
use sync_state::{TableId, Tid};

use crate::{Error, PartitionReader, PartitionStore};

/// The name part for an unknown start of validity.
pub const UNKNOWN_FROM: &str = "unknown";

/// The file-name form of an `updated` value, from the instant it stands
/// for ([`sync_state::canonical_source_time`]): `2024-08-12T08:00:00` →
/// `20240812T080000`, with milliseconds `20240812T080000250`. Fixed
/// width, so two different instants never get the same name; `None` for
/// a value that is not an instant.
pub fn compact_stamp(updated: &str) -> Option<String> {
    let canonical = sync_state::canonical_source_time(updated)?;
    Some(
        canonical
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect(),
    )
}

/// `20240812T080000` → `2024-08-12T08:00:00` (and `…250` → `….250`);
/// `None` for anything else.
pub fn expand_stamp(compact: &str) -> Option<String> {
    let b = compact.as_bytes();
    let ok = (b.len() == 15 || b.len() == 18)
        && b[8] == b'T'
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[9..].iter().all(u8::is_ascii_digit);
    ok.then(|| {
        let mut s = format!(
            "{}-{}-{}T{}:{}:{}",
            &compact[0..4],
            &compact[4..6],
            &compact[6..8],
            &compact[9..11],
            &compact[11..13],
            &compact[13..15]
        );
        if b.len() == 18 {
            s.push('.');
            s.push_str(&compact[15..]);
        }
        s
    })
    .filter(|s| sync_state::canonical_source_time(s).as_deref() == Some(s.as_str()))
}

/// One kept vintage of a period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vintage {
    /// The period.
    pub tid: Tid,
    /// Valid from this `updated` (`None`: before validity was recorded).
    pub valid_from: Option<String>,
    /// Valid until this `updated` (exclusive).
    pub valid_to: String,
    /// Its storage key.
    pub key: String,
    /// Its size in bytes, as listed.
    pub size: u64,
}

impl Vintage {
    /// Whether this vintage was the published content at `at` (source clock).
    pub fn covers(&self, at: &str) -> bool {
        self.valid_from.as_deref().is_none_or(|f| f <= at) && at < self.valid_to.as_str()
    }
}

impl PartitionStore {
    /// The key a vintage of `tid` valid `[from, to)` is kept under. A
    /// `from` that is not an instant (a file written before validity was
    /// recorded) is `unknown`; a `to` that is not an instant is an error.
    pub fn vintage_key(
        &self,
        table: &TableId,
        tid: &Tid,
        from: Option<&str>,
        to: &str,
    ) -> Result<String, Error> {
        let to = compact_stamp(to).ok_or_else(|| Error::BadStamp {
            table: table.clone(),
            value: sync_state::shorten(to, 40),
        })?;
        Ok(format!(
            "{}/{}/{}--{to}.{}",
            self.data_dir().vintages_key(table),
            tid.file_stem(),
            from.and_then(compact_stamp)
                .unwrap_or_else(|| UNKNOWN_FROM.to_string()),
            sync_state::PARTITION_EXT,
        ))
    }

    /// Every vintage of `table`, by period, oldest first.
    pub fn list_vintages(&self, table: &TableId) -> Result<BTreeMap<Tid, Vec<Vintage>>, Error> {
        let prefix = self.data_dir().vintages_key(table);
        let mut out: BTreeMap<Tid, Vec<Vintage>> = BTreeMap::new();
        for obj in self.storage().list_recursive(&prefix)? {
            let Some(rest) = obj.key.strip_prefix(&format!("{prefix}/")) else {
                continue;
            };
            let Some((stem, name)) = rest.split_once('/') else {
                continue;
            };
            let Ok(tid) = Tid::from_file_stem(stem) else {
                continue;
            };
            let Some((from, to)) = name
                .strip_suffix(&format!(".{}", sync_state::PARTITION_EXT))
                .and_then(|n| n.split_once("--"))
            else {
                continue;
            };
            let Some(valid_to) = expand_stamp(to) else {
                continue;
            };
            out.entry(tid.clone()).or_default().push(Vintage {
                tid,
                valid_from: expand_stamp(from),
                valid_to,
                key: obj.key.clone(),
                size: obj.size,
            });
        }
        for v in out.values_mut() {
            v.sort_by(|a, b| a.valid_to.cmp(&b.valid_to));
        }
        Ok(out)
    }

    /// Opens a vintage of `table` for reading.
    pub fn read_vintage(&self, table: &TableId, v: &Vintage) -> Result<PartitionReader, Error> {
        crate::store::open_reader(self.storage(), &v.key, crate::READ_BATCH_ROWS)?.ok_or_else(
            || Error::MissingPartition {
                table: table.clone(),
                tid: v.tid.clone(),
                path: self.storage().display_key(&v.key),
            },
        )
    }

    /// Which stored content of each period was published at `at` (the
    /// source's clock, `YYYY-MM-DDTHH:MM:SS`): the current partition when it
    /// was valid from `at` or earlier, else the vintage whose interval holds
    /// `at`. Periods that did not exist then are absent. `tids` limits the
    /// periods (all when `None`).
    pub fn as_of(
        &self,
        table: &TableId,
        at: &str,
        tids: Option<&BTreeSet<Tid>>,
    ) -> Result<Vec<(Tid, AsOfSource)>, Error> {
        let vintages = self.list_vintages(table)?;
        let current = self.list_tids(table)?;
        let mut all: BTreeSet<Tid> = current.iter().cloned().collect();
        all.extend(vintages.keys().cloned());
        let mut out = Vec::new();
        for tid in all {
            if tids.is_some_and(|w| !w.contains(&tid)) {
                continue;
            }
            if current.contains(&tid) {
                let f = self.footer(table, &tid)?;
                if f.valid_from.as_deref().is_none_or(|from| from <= at) {
                    out.push((tid, AsOfSource::Current));
                    continue;
                }
            }
            if let Some(v) = vintages
                .get(&tid)
                .and_then(|vs| vs.iter().rev().find(|v| v.covers(at)))
            {
                out.push((tid, AsOfSource::Vintage(v.clone())));
            }
        }
        Ok(out)
    }

    /// Opens what [`PartitionStore::as_of`] chose for one period.
    pub fn read_as_of(
        &self,
        table: &TableId,
        tid: &Tid,
        src: &AsOfSource,
    ) -> Result<PartitionReader, Error> {
        match src {
            AsOfSource::Current => self.read_partition(table, tid),
            AsOfSource::Vintage(v) => self.read_vintage(table, v),
        }
    }
}

impl PartitionStore {
    /// The table (or `tids`) as published at `at` (source clock), streamed
    /// period by period in batches of up to 16 Ki rows: memory is bounded by
    /// one batch, however large the table.
    pub fn read_table_as_of(
        &self,
        table: &TableId,
        at: &str,
        tids: Option<&BTreeSet<Tid>>,
    ) -> Result<AsOfReader, Error> {
        Ok(AsOfReader {
            store: self.clone(),
            table: table.clone(),
            pending: self.as_of(table, at, tids)?.into(),
            current: None,
        })
    }
}

/// Streams a table as of an instant (see
/// [`PartitionStore::read_table_as_of`]): `(period, batch)` pairs.
pub struct AsOfReader {
    store: PartitionStore,
    table: TableId,
    pending: VecDeque<(Tid, AsOfSource)>,
    current: Option<(Tid, PartitionReader)>,
}

impl AsOfReader {
    /// The periods still to come, with where each is read from.
    pub fn remaining(&self) -> impl Iterator<Item = &(Tid, AsOfSource)> {
        self.pending.iter()
    }
}

impl Iterator for AsOfReader {
    type Item = Result<(Tid, RecordBatch), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((tid, reader)) = self.current.as_mut() {
                match reader.next() {
                    Some(Ok(b)) => return Some(Ok((tid.clone(), b))),
                    Some(Err(e)) => return Some(Err(e)),
                    None => self.current = None,
                }
            }
            let (tid, src) = self.pending.pop_front()?;
            match self.store.read_as_of(&self.table, &tid, &src) {
                Ok(r) => self.current = Some((tid, r)),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// Writes `batches` into one Parquet file at `path` (temp file + rename),
/// with the partitions' writer settings; returns the rows written. All
/// batches must have the first one's schema.
pub fn export_parquet(
    path: &Path,
    batches: impl Iterator<Item = Result<RecordBatch, Error>>,
) -> Result<u64, Error> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut writer: Option<crate::file_writer::PartitionFileWriter> = None;
    let mut batches = batches.peekable();
    let schema = match batches.peek() {
        Some(Ok(b)) => b.schema(),
        Some(Err(_)) => {
            return Err(batches.next().and_then(Result::err).unwrap_or_else(|| {
                Error::MixedExport {
                    path: path.display().to_string(),
                }
            }))
        }
        None => crate::partition_schema(&[crate::TIME_COLUMN, crate::VALUE_COLUMN]),
    };
    for b in batches {
        let b = b?;
        let w = match writer.as_mut() {
            Some(w) => w,
            None => writer.insert(crate::file_writer::PartitionFileWriter::create(
                dir,
                &schema,
                &crate::PartitionMeta::default(),
            )?),
        };
        if b.schema().fields() != schema.fields() {
            return Err(Error::MixedExport {
                path: path.display().to_string(),
            });
        }
        w.write(&b)?;
    }
    let w = match writer {
        Some(w) => w,
        None => crate::file_writer::PartitionFileWriter::create(
            dir,
            &schema,
            &crate::PartitionMeta::default(),
        )?,
    };
    let staged = w.finish()?;
    let rows = staged.rows;
    crate::file_writer::persist_local(staged, path)?;
    Ok(rows)
}

/// Where a period's content as of an instant is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AsOfSource {
    /// The current partition.
    Current,
    /// A kept vintage.
    Vintage(Vintage),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        assert_eq!(
            compact_stamp("2024-08-12T08:00:00").as_deref(),
            Some("20240812T080000")
        );
        assert_eq!(
            expand_stamp("20240812T080000").as_deref(),
            Some("2024-08-12T08:00:00")
        );
        assert_eq!(expand_stamp(UNKNOWN_FROM), None);
        assert_eq!(compact_stamp(""), None);
        // Stamps that differ only in punctuation are different instants
        // and get different names; forms of one instant get one name,
        // which reads back as the canonical form.
        let a = compact_stamp("2024-01-02T03:04:05").expect("a");
        let b = compact_stamp("2024-01-02T03:04:05.500").expect("b");
        assert_ne!(a, b);
        assert_eq!(expand_stamp(&b).as_deref(), Some("2024-01-02T03:04:05.500"));
        for same in [
            "2024-08-12 08:00:00",
            "2024-08-12T06:00:00Z",
            "2024-08-12T08:00:00.000",
        ] {
            assert_eq!(
                compact_stamp(same).as_deref(),
                Some("20240812T080000"),
                "{same}"
            );
        }
        assert_eq!(expand_stamp("20241312T080000"), None);
        let v = Vintage {
            tid: Tid::new("2024K1").expect("tid"),
            valid_from: Some("2024-08-12T08:00:00".into()),
            valid_to: "2024-11-12T08:00:00".into(),
            key: String::new(),
            size: 0,
        };
        assert!(!v.covers("2024-08-12T07:59:59"));
        assert!(v.covers("2024-08-12T08:00:00"));
        assert!(v.covers("2024-11-12T07:59:59"));
        assert!(!v.covers("2024-11-12T08:00:00"));
    }
}
