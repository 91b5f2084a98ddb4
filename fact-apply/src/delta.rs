//! The delta of an ordinary fact table, in one transaction: lock, conversion,
//! COPY the changed periods into a temp table, DELETE them from the target
//! by typed `tid`, INSERT, check the counts, record history, commit.

use std::collections::BTreeMap;

use postgres::{Client, Transaction};

use crate::catalog::table_columns;
use crate::conversion::{stream_partition, Conversion};
use crate::convert::Cell;
use crate::history;
use crate::tx::{
    begin, check_against_stored, check_inserted, conversion_for, copy_to_temp, delete_periods,
    delete_values, grouped_count, insert_from_temp, lock_target, period_counts, tid_column,
    tid_values, Ctx, Delta, Loaded, Outcome,
};
use crate::Error;

/// Applies `delta` to the ordinary table `oid`. `prelude` statements
/// (column widenings) run first, in the same transaction.
pub(crate) fn apply_delta(
    client: &mut Client,
    ctx: &Ctx<'_>,
    oid: u32,
    delta: &Delta<'_>,
    prelude: &[String],
) -> Result<Outcome, Error> {
    let present = delta.present;
    let dry = ctx.opts.dry_run;
    let mut tx = begin(client, ctx.table, dry)?;
    if !dry {
        lock_target(&mut tx, ctx)?;
        for sql in prelude {
            tx.batch_execute(sql)
                .map_err(Error::db(ctx.table, "widening a column"))?;
        }
    }
    let columns = table_columns(&mut tx, ctx.table, oid)?;
    let conv = conversion_for(ctx, &columns, delta)?;
    let all = delta.all();
    let values = tid_values(&conv, ctx.table, &all)?;
    check_against_stored(ctx, &conv, &all, &values)?;
    if dry {
        return dry_run(tx, ctx, &conv, delta, &values);
    }
    let tid_col = tid_column(&conv);
    let history = history::prepare(&mut tx, ctx, &conv, delta, &values)?;
    let stats = if present.is_empty() {
        Vec::new()
    } else {
        let stats = copy_to_temp(&mut tx, ctx, &conv, present)?;
        sync_state::crash::point("apply: copied, before delete");
        stats
    };
    let deleted_by_pos = delete_periods(&mut tx, ctx, &tid_col, &values)?;
    let extra_rows = delete_values(&mut tx, ctx, &conv, delta.extra)?;
    let mut inserted_by_pos = BTreeMap::new();
    if !present.is_empty() {
        let n = insert_from_temp(&mut tx, ctx, &conv)?;
        let loaded = Loaded {
            tids: present,
            values: &values[..present.len()],
            stats: &stats,
            inserted: n,
        };
        inserted_by_pos = check_inserted(&mut tx, ctx, &conv, &loaded)?;
    }
    let history_rows = match history {
        Some(h) => Some(h.record_from(&mut tx, ctx, &conv, crate::tx::TEMP_TABLE)?),
        None => None,
    };
    let metadata = crate::meta::before_commit(&mut tx, ctx);
    sync_state::crash::point("apply: before commit");
    tx.commit().map_err(Error::db(ctx.table, "commit"))?;
    sync_state::crash::point("apply: committed");
    Ok(Outcome {
        periods: period_counts(&all, &deleted_by_pos, &inserted_by_pos),
        dropped: stats.iter().map(|s| s.dropped).sum(),
        history_rows,
        extra_rows,
        metadata,
        ..Outcome::default()
    })
}

/// A dry run: every partition is read and converted (so bad values are
/// found), the rows the delete would remove are counted, nothing is written.
fn dry_run(
    mut tx: Transaction<'_>,
    ctx: &Ctx<'_>,
    conv: &Conversion,
    delta: &Delta<'_>,
    values: &[Cell<'_>],
) -> Result<Outcome, Error> {
    let all = delta.all();
    let mut discard = |_: &[Cell<'_>]| Ok(());
    let mut stats = Vec::with_capacity(delta.present.len());
    for tid in delta.present {
        stats.push(stream_partition(
            ctx.store,
            ctx.table,
            tid,
            conv,
            &mut discard,
        )?);
    }
    let deleted = grouped_count(
        &mut tx,
        ctx.table,
        &ctx.target,
        &tid_column(conv),
        values,
        "counting rows to delete",
    )?;
    let extra_rows = if delta.extra.is_empty() {
        0
    } else {
        let ty = &conv.columns[conv.tid].pg_type;
        let n: i64 = tx
            .query_one(
                &format!(
                    "SELECT count(*) FROM {} WHERE {} = ANY($1::text[]::{ty}[])",
                    ctx.target,
                    tid_column(conv)
                ),
                &[&delta.extra],
            )
            .map_err(Error::db(ctx.table, "counting rows to delete"))?
            .get(0);
        u64::try_from(n).unwrap_or(0)
    };
    let inserted: BTreeMap<usize, u64> = stats.iter().map(|s| s.sent).enumerate().collect();
    tx.rollback()
        .map_err(Error::db(ctx.table, "ending the read-only transaction"))?;
    Ok(Outcome {
        periods: period_counts(&all, &deleted, &inserted),
        dropped: stats.iter().map(|s| s.dropped).sum(),
        extra_rows,
        ..Outcome::default()
    })
}
