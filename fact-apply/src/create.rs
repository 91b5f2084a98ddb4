//! `--create-missing`: a missing fact table is created from its partitions
//! (the original loader's inferred types), loaded from every partition of
//! the table and indexed, all in one transaction.

use postgres::Client;
use sync_state::Tid;

use crate::catalog::{table_columns, table_oid, TargetColumn};
use crate::conversion::Conversion;
use crate::convert::Cell;
use crate::history::ensure_schema;
use crate::infer::{infer_table, InferredTable};
use crate::swap::{free_partition_name, literal};
use crate::tx::{
    begin, build_conversion, check_inserted, copy_to_temp, insert_from_temp, period_counts,
    tid_values, Ctx, Delta, Loaded, Outcome,
};
use crate::Error;

/// Creates the table from every partition of it on the storage (the changed
/// periods included), loads them, and indexes it.
pub(crate) fn create_and_load(
    client: &mut Client,
    ctx: &Ctx<'_>,
    present: &[Tid],
) -> Result<Outcome, Error> {
    let tids = every_period(ctx, present)?;
    let inferred = infer_table(ctx.store, ctx.table, &tids)?;
    let mut tx = begin(client, ctx.table, ctx.opts.dry_run)?;
    let columns: Vec<TargetColumn> = if ctx.opts.dry_run {
        // Nothing is created: convert against the inferred columns.
        inferred
            .columns
            .iter()
            .map(|(n, t)| TargetColumn::inferred(n, t))
            .collect()
    } else {
        create_table(&mut tx, ctx, &inferred)?
    };
    let conv = build_conversion(ctx.store, ctx.table, &ctx.target, &columns, &tids)?;
    let values = tid_values(&conv, ctx.table, &tids)?;
    if ctx.opts.dry_run {
        return dry_run(tx, ctx, &conv, &tids);
    }
    if ctx.opts.partitioned {
        create_partitions(&mut tx, ctx, &conv, &tids, &values)?;
    }
    // History starts with the table: created while it is still empty, so
    // every row enters it valid from its partition's `valid_from`.
    let history = crate::history::prepare(&mut tx, ctx, &conv, &Delta::load_all(&tids), &values)?;
    let stats = copy_to_temp(&mut tx, ctx, &conv, &tids)?;
    sync_state::crash::point("apply: copied, before delete");
    let n = insert_from_temp(&mut tx, ctx, &conv)?;
    let loaded = Loaded {
        tids: &tids,
        values: &values,
        stats: &stats,
        inserted: n,
    };
    let inserted = check_inserted(&mut tx, ctx, &conv, &loaded)?;
    for sql in inferred.index_sql(&ctx.opts.schema, &ctx.name) {
        tx.batch_execute(&sql)
            .map_err(Error::db(ctx.table, "creating the indexes"))?;
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
        periods: period_counts(&tids, &Default::default(), &inserted),
        dropped: stats.iter().map(|s| s.dropped).sum(),
        created: true,
        history_rows,
        metadata,
        ..Outcome::default()
    })
}

/// Every period of the table on the storage, the changed ones included.
fn every_period(ctx: &Ctx<'_>, present: &[Tid]) -> Result<Vec<Tid>, Error> {
    let mut tids: Vec<Tid> = ctx
        .store
        .list_tids(ctx.table)
        .map_err(|source| Error::List {
            table: ctx.table.clone(),
            source: Box::new(source),
        })?
        .into_iter()
        .collect();
    for t in present {
        if !tids.contains(t) {
            tids.push(t.clone());
        }
    }
    Ok(tids)
}

/// `CREATE TABLE` with the inferred types (partitioned by list on `tid`
/// when asked), in its schema (created when missing); its columns.
fn create_table(
    tx: &mut postgres::Transaction<'_>,
    ctx: &Ctx<'_>,
    inferred: &InferredTable,
) -> Result<Vec<TargetColumn>, Error> {
    let mut create_sql = inferred.create_sql(&ctx.opts.schema, &ctx.name);
    if ctx.opts.partitioned {
        create_sql.push_str(" PARTITION BY LIST (tid)");
    }
    tracing::info!(table = %ctx.table, sql = %create_sql, "creating missing fact table");
    ensure_schema(tx, ctx, &ctx.opts.schema)?;
    tx.batch_execute(&create_sql)
        .map_err(Error::db(ctx.table, "creating the table"))?;
    let oid = table_oid(tx, &ctx.opts.schema, &ctx.name)
        .map_err(Error::db(ctx.table, "looking up the created table"))?
        .ok_or_else(|| Error::NoPeriods {
            table: ctx.table.clone(),
        })?;
    table_columns(tx, ctx.table, oid)
}

/// A dry run of a create: every partition read and converted, nothing
/// written.
fn dry_run(
    tx: postgres::Transaction<'_>,
    ctx: &Ctx<'_>,
    conv: &Conversion,
    tids: &[Tid],
) -> Result<Outcome, Error> {
    let mut discard = |_: &[Cell<'_>]| Ok(());
    let mut inserted = std::collections::BTreeMap::new();
    let mut dropped = 0;
    for (i, tid) in tids.iter().enumerate() {
        let s = crate::conversion::stream_partition(ctx.store, ctx.table, tid, conv, &mut discard)?;
        inserted.insert(i, s.sent);
        dropped += s.dropped;
    }
    tx.rollback()
        .map_err(Error::db(ctx.table, "ending the read-only transaction"))?;
    Ok(Outcome {
        periods: period_counts(tids, &Default::default(), &inserted),
        dropped,
        created: true,
        ..Outcome::default()
    })
}

/// One partition per period of a table created `--partitioned`; the rows
/// inserted into the parent are routed to them, and the indexes created on
/// the parent afterwards are built on each.
fn create_partitions(
    tx: &mut postgres::Transaction<'_>,
    ctx: &Ctx<'_>,
    conv: &Conversion,
    tids: &[Tid],
    values: &[Cell<'_>],
) -> Result<(), Error> {
    let ty = conv.columns[conv.tid].pg_type.clone();
    for (tid, value) in tids.iter().zip(values) {
        let lit = literal(tx, ctx, &ty, value)?;
        let name = crate::catalog::qualified(&ctx.opts.schema, &free_partition_name(tx, ctx, tid)?);
        tx.batch_execute(&format!(
            "CREATE TABLE {name} PARTITION OF {} FOR VALUES IN ({lit})",
            ctx.target
        ))
        .map_err(Error::db(ctx.table, "creating a period's partition"))?;
    }
    Ok(())
}
