//! A table's schema signature: its variable ids in tableinfo order, time
//! variable included (`["OMRÅDE", "KØN", "Tid"]`). Compared before any data
//! request: a different signature re-fetches the table whole.

use std::collections::BTreeSet;

use partition_store::{PartitionStore, VALUE_COLUMN};
use statbank_client::TableInfo;
use sync_state::{TableId, TableState, Tid};

use crate::Error;

/// The signature of a tableinfo.
pub(super) fn signature_of(info: &TableInfo) -> Vec<String> {
    info.variables.iter().map(|v| v.id.clone()).collect()
}

/// Whether two signatures name the same columns in the same order. BULK
/// headers (and so partition columns) are the ids upper-cased, so a
/// signature derived from columns compares case-insensitively.
pub(super) fn same(a: &[String], b: &[String]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.to_uppercase() == y.to_uppercase())
}

/// The signature the local partitions were written with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Before {
    pub(super) signature: Vec<String>,
    /// The partitions disagree among themselves (a folder written before
    /// signatures were kept, by a version that mixed schemas): the table
    /// must be re-fetched whole whatever the new signature.
    pub(super) mixed: bool,
}

/// `state.json`'s signature, else one derived from the partitions (their
/// footers' signature, or their columns); `None` without partitions. A
/// mirror written before signatures were kept is upgraded table by table,
/// without re-fetching anything whose columns still match.
pub(super) fn before(
    store: &PartitionStore,
    table: &TableId,
    prev: Option<&TableState>,
    local: &BTreeSet<Tid>,
    cached: Option<&TableInfo>,
) -> Result<Option<Before>, Error> {
    let Some(last) = local.last() else {
        return Ok(None);
    };
    // An unreadable partition (corrupt) does not decide: it is rewritten
    // when its period is refreshed.
    if let Some(v) = store.footer(table, last).ok().and_then(|f| f.variables) {
        return Ok(Some(Before {
            signature: v,
            mixed: false,
        }));
    }
    if let Some(v) = prev.and_then(|p| p.variables.clone()) {
        return Ok(Some(Before {
            signature: v,
            mixed: false,
        }));
    }
    let mut seen: Vec<Vec<String>> = Vec::new();
    for tid in local {
        let Ok(f) = store.footer(table, tid) else {
            continue;
        };
        let sig = f.variables.unwrap_or_else(|| {
            f.columns
                .into_iter()
                .filter(|c| c != VALUE_COLUMN)
                .collect()
        });
        if !seen.iter().any(|s| same(s, &sig)) {
            seen.push(sig);
        }
    }
    let mut signature = seen.first().cloned().unwrap_or_default();
    // Prefer the ids as tableinfo spells them, when the cached tableinfo of
    // the last sync matches the columns.
    if let Some(c) = cached.map(signature_of) {
        if same(&c, &signature) {
            signature = c;
        }
    }
    tracing::info!(table = %table, signature = ?signature, mixed = seen.len() > 1,
        "derived the schema signature of a table written before signatures were kept");
    Ok(Some(Before {
        signature,
        mixed: seen.len() > 1,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_compare_like_bulk_headers() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(same(
            &s(&["OMRÅDE", "KØN", "Tid"]),
            &s(&["OMRÅDE", "KØN", "TID"])
        ));
        assert!(!same(&s(&["KØN", "Tid"]), &s(&["KØN", "ALDER", "Tid"])));
        assert!(!same(
            &s(&["KØN", "ALDER", "Tid"]),
            &s(&["ALDER", "KØN", "Tid"])
        ));
    }
}
