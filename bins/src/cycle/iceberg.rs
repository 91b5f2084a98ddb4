//! The tables' Iceberg metadata (`--iceberg`): regenerated after a table's
//! partitions are published, so a reader that opens the table from its
//! metadata sees at most the one table being published out of step (see
//! docs/iceberg.md, "What a reader may see").

use partition_store::{IcebergOptions, PartitionStore};
use statbank_client::error_chain;
use sync_state::{SyncState, TableId, TableResult, TableState};

use tracing::Instrument;

use super::Ctx;
use crate::Error;

/// The name of the span around one table's metadata step.
pub const METADATA_SPAN: &str = "iceberg_metadata";

/// Whether a table the cycle does not otherwise touch still needs its
/// metadata (generated for another `updated`, or never: the data folder
/// just turned `--iceberg` on).
pub(super) fn behind(ctx: &Ctx<'_>, prev: &TableState) -> bool {
    ctx.iceberg
        && prev.last_seen_updated.is_some()
        && prev.iceberg_updated != prev.last_seen_updated
}

/// Regenerates `table`'s metadata for `updated` and records it in the
/// result and the state entry. A failure is reported in the result
/// (`iceberg_error`) and left for the next cycle: the partitions it
/// describes are published either way.
pub(super) async fn refresh(ctx: &Ctx<'_>, table: &TableId, updated: &str, r: &mut TableResult) {
    if !ctx.iceberg {
        return;
    }
    let opts = IcebergOptions::at(ctx.opts.clock.now().timestamp_millis());
    let (store, id, at) = (ctx.store.clone(), table.clone(), updated.to_string());
    // A span per table's metadata step: its time shows in traces (and
    // bench-iceberg sums it).
    let span = tracing::info_span!(METADATA_SPAN, table = %table);
    let written = tokio::task::spawn_blocking(move || store.write_iceberg(&id, &at, &opts))
        .instrument(span)
        .await
        .map_err(|e| Error::Internal(format!("iceberg task failed: {e}")))
        .and_then(|r| r.map_err(Error::from));
    // Saved with the next save of `state.json`: a crash before it only has
    // the next cycle regenerate the same metadata (and write nothing).
    let outcome = written.and_then(|o| {
        let at = updated.to_string();
        ctx.note_state(table, |s| s.iceberg_updated = Some(at))?;
        Ok(o)
    });
    match outcome {
        Ok(o) => {
            if o.written {
                r.iceberg_version = o.version;
            }
            tracing::debug!(table = %table, version = ?o.version, written = o.written,
                snapshots = o.snapshots, bytes = o.bytes_written, removed = o.removed,
                footers_read = o.footers_read, "iceberg metadata");
        }
        Err(e) => {
            let msg = error_chain(&e);
            tracing::warn!(table = %table, error = %msg, "iceberg metadata not written");
            r.iceberg_error = Some(msg);
        }
    }
}

/// Metadata written where the data folder no longer is names files that
/// are not this folder's: every table's is regenerated on its next visit.
pub(super) fn check_location(store: &PartitionStore, state: &mut SyncState) -> Result<(), Error> {
    let here = store.iceberg_location()?;
    if state.iceberg_location.as_deref() != Some(here.as_str()) {
        if let Some(was) = &state.iceberg_location {
            tracing::info!(was = %was, now = %here, "the data folder moved: its Iceberg metadata is regenerated");
        }
        for t in state.tables.values_mut() {
            t.iceberg_updated = None;
        }
        state.iceberg_location = Some(here);
    }
    Ok(())
}

/// `--no-iceberg`: removes every table's metadata and forgets for which
/// `updated` it was written.
pub(super) async fn remove_all(store: &PartitionStore, state: &mut SyncState) -> Result<(), Error> {
    let s = store.clone();
    let removed = tokio::task::spawn_blocking(move || {
        let key = s.data_dir().iceberg_root_key();
        s.storage().delete_prefix(&key)
    })
    .await
    .map_err(|e| Error::Internal(format!("iceberg task failed: {e}")))??;
    if removed > 0 {
        tracing::info!(
            files = removed,
            "removed the Iceberg metadata (--no-iceberg)"
        );
    }
    for t in state.tables.values_mut() {
        t.iceberg_updated = None;
    }
    state.iceberg_location = None;
    Ok(())
}
