//! `plan ID`: what the next run would fetch for a table.

use std::collections::BTreeSet;
use std::fmt::Write;

use partition_store::PartitionStore;
use serde_json::json;
use statbank_client::{StatbankClient, TableInfo, TableInfoExt};
use sync_state::{
    batches, eligibility, estimate_rows_per_period, periods_per_request, select_periods, DataDir,
    Eligibility, Frequency, FrequencyOverrides, PeriodSelection, SyncState, TableId, Tid,
    MAX_ROWS_PER_CALL,
};

use super::Report;
use crate::Error;

/// `plan ID`: what the next run would fetch for `table` (tableinfo only, no
/// data download), assuming the catalog gate is open.
pub async fn plan(
    dir: &DataDir,
    client: &StatbankClient,
    table: &TableId,
) -> Result<Report, Error> {
    let state = SyncState::load(dir)?;
    let overrides = FrequencyOverrides::load(dir)?;
    let store = PartitionStore::new(dir);
    let (info, _) = client.table_info(table).await?;
    let remote = info.tids()?;
    let local = store.list_tids(table)?;
    let updated = info.updated.clone().unwrap_or_default();
    let entry = state.tables.get(table);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "table {table}: remote updated {updated}, last seen {}",
        entry
            .and_then(|e| e.last_seen_updated.as_deref())
            .unwrap_or("never")
    );
    let bootstrap = match eligibility(entry, &updated, !local.is_empty()) {
        Eligibility::Unchanged => {
            let _ = writeln!(
                out,
                "unchanged: the next run skips it (unchanged_updated) and fetches nothing"
            );
            let json = json!({"table": table, "remote_updated": updated, "unchanged": true});
            return Ok(Report { text: out, json });
        }
        Eligibility::Sync { bootstrap } => bootstrap,
    };
    let next = NextFetch::new(&info, &remote, &local, &overrides, table, bootstrap);
    next.write(&mut out, remote.len(), local.len());
    let json = json!({
        "table": table,
        "remote_updated": updated,
        "unchanged": false,
        "bootstrap": bootstrap,
        "frequency": next.frequency,
        "frequency_source": next.source,
        "remote_periods": remote.len(),
        "local_periods": local.len(),
        "new_periods": next.sel.new_periods,
        "refresh_periods": next.sel.refresh_periods,
        "fetch": next.sel.fetch,
        "requests": next.requests,
        "verification_debt": entry.map(|e| e.verify_debt.len()).unwrap_or(0),
    });
    Ok(Report { text: out, json })
}

/// What the next run fetches for a table whose catalog entry changed.
struct NextFetch {
    bootstrap: bool,
    frequency: Frequency,
    /// Where the frequency comes from: the overrides file or inferred.
    source: &'static str,
    sel: PeriodSelection,
    /// Periods per BULK request.
    per_request: usize,
    /// BULK requests for `sel.fetch`.
    requests: usize,
}

impl NextFetch {
    /// The frequency (overridden or inferred), the periods selected and
    /// the requests they take.
    fn new(
        info: &TableInfo,
        remote: &[Tid],
        local: &BTreeSet<Tid>,
        overrides: &FrequencyOverrides,
        table: &TableId,
        bootstrap: bool,
    ) -> Self {
        let (frequency, source) = match overrides.get(table) {
            Some(f) => (f, "frequency_overrides.json"),
            None => (sync_state::infer_frequency(remote), "inferred"),
        };
        let sel = select_periods(
            remote,
            local,
            frequency,
            sync_state::SelectOptions {
                bootstrap,
                prune: false,
            },
        );
        let per_request = periods_per_request(
            estimate_rows_per_period(&info.value_counts(), remote.len()),
            MAX_ROWS_PER_CALL,
        );
        let requests = batches(&sel.fetch, per_request).len();
        NextFetch {
            bootstrap,
            frequency,
            source,
            sel,
            per_request,
            requests,
        }
    }

    /// The plan as text: mode and frequency, new periods, refresh window,
    /// requests.
    fn write(&self, out: &mut String, remote: usize, local: usize) {
        let join = |v: &[Tid]| v.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ");
        let sel = &self.sel;
        let _ = writeln!(
            out,
            "{}: frequency {} ({}), {remote} remote periods, {local} local",
            if self.bootstrap {
                "bootstrap"
            } else {
                "incremental"
            },
            self.frequency,
            self.source,
        );
        let _ = writeln!(
            out,
            "new periods ({}): {}",
            sel.new_periods.len(),
            join(&sel.new_periods)
        );
        let _ = writeln!(
            out,
            "refresh window ({}): {}",
            sel.refresh_periods.len(),
            join(&sel.refresh_periods)
        );
        let _ = writeln!(
            out,
            "fetch: {} periods in {} BULK request(s) of at most {} periods",
            sel.fetch.len(),
            self.requests,
            self.per_request,
        );
    }
}
