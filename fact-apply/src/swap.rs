//! Fact tables partitioned by list on `tid`, one partition per period:
//! changed periods are swapped in as whole partitions instead of deleting
//! and inserting rows.
//!
//! For each changed period a staging table with the partition's columns is
//! loaded with a binary COPY, gets the parent's indexes (built after the
//! load) and a `CHECK` matching the partition bound (so `ATTACH` skips its
//! validation scan). Then, in the same transaction: `DETACH` the old
//! partition, `ATTACH` the new one, `DROP` the old. New periods become new
//! partitions; deleted periods are detached and dropped. No row is deleted,
//! so no dead tuples are left. Readers keep reading the parent throughout:
//! `DETACH` holds the parent's lock only from the swap to the commit, and a
//! reader sees every period, old or new content, never a missing one.

use std::collections::BTreeMap;

use postgres::{Client, Transaction};
use sync_state::Tid;

use crate::catalog::{qualified, quote_ident, table_columns};
use crate::conversion::{Conversion, PeriodStats};
use crate::convert::Cell;
use crate::history;
use crate::tx::{
    begin, check_against_stored, conversion_for, copy_into, count_rows, lock_target, period_counts,
    tid_values, Ctx, Delta, Outcome,
};

const COUNTING: &str = "counting a partition's rows";
use crate::Error;

/// How a partitioned fact table is partitioned: by list on `tid` alone.
pub(crate) fn is_partitioned_by_tid(
    tx: &mut Client,
    ctx: &Ctx<'_>,
    oid: u32,
) -> Result<bool, Error> {
    let row = tx
        .query_opt(
            "SELECT p.partstrat::text, \
                    array(SELECT a.attname::text FROM unnest(p.partattrs::int2[]) k(n) \
                          JOIN pg_catalog.pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = k.n) \
             FROM pg_catalog.pg_partitioned_table p WHERE p.partrelid = $1",
            &[&oid],
        )
        .map_err(Error::db(ctx.table, "reading the partitioning"))?;
    Ok(match row {
        Some(r) => {
            let strategy: String = r.get(0);
            let cols: Vec<String> = r.get(1);
            strategy == "l" && cols == ["tid"]
        }
        None => false,
    })
}

/// An index of the parent, to be built on each staging table.
struct ParentIndex {
    method: String,
    unique: bool,
    columns: Vec<String>,
}

fn parent_indexes(
    tx: &mut Transaction<'_>,
    ctx: &Ctx<'_>,
    oid: u32,
) -> Result<Vec<ParentIndex>, Error> {
    let rows = tx
        .query(
            "SELECT am.amname::text, i.indisunique, \
                    array(SELECT a.attname::text FROM unnest(i.indkey) WITH ORDINALITY k(attnum, n) \
                          JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                          ORDER BY k.n) \
             FROM pg_catalog.pg_index i \
             JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid \
             JOIN pg_catalog.pg_am am ON am.oid = ic.relam \
             WHERE i.indrelid = $1 AND i.indexprs IS NULL AND i.indpred IS NULL",
            &[&oid],
        )
        .map_err(Error::db(ctx.table, "reading the parent's indexes"))?;
    Ok(rows
        .iter()
        .map(|r| ParentIndex {
            method: r.get(0),
            unique: r.get(1),
            columns: r.get(2),
        })
        .collect())
}

/// The partition of `parent` holding exactly the value `literal`, if any.
fn partition_for(
    tx: &mut Transaction<'_>,
    ctx: &Ctx<'_>,
    parent: u32,
    literal: &str,
) -> Result<Option<String>, Error> {
    let bound = format!("FOR VALUES IN ({literal})");
    let row = tx
        .query_opt(
            "SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_inherits i \
             JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE i.inhparent = $1 AND pg_catalog.pg_get_expr(c.relpartbound, c.oid) = $2",
            &[&parent, &bound],
        )
        .map_err(Error::db(ctx.table, "finding a period's partition"))?;
    Ok(row.map(|r| qualified(&r.get::<_, String>(0), &r.get::<_, String>(1))))
}

/// The SQL literal of a period's `tid` value (`'2024-01-01'`).
pub(crate) fn literal(
    tx: &mut Transaction<'_>,
    ctx: &Ctx<'_>,
    ty: &str,
    v: &Cell<'_>,
) -> Result<String, Error> {
    let row = tx
        .query_one(&format!("SELECT quote_literal(($1::{ty})::text)"), &[v])
        .map_err(Error::db(ctx.table, "formatting a partition bound"))?;
    Ok(row.get(0))
}

/// The partition name of a period: the fact table's name, `_`, and the
/// period code with every byte that is not an ASCII letter or digit
/// written as `_` and two hex digits (`folk1a_2024K1`,
/// `scene01a_2020_2f2021`). The escape is one to one, so two periods never
/// get the same name (`2023k1`/`2023K1`, `2020/2021`/`2020-2021`), and no
/// table id holds `_`, so a partition name is never a fact table's. A name
/// longer than Postgres's 63 bytes becomes `<table>__h<hash of the code>`
/// (`__h` is no escape: `h` is not a hex digit).
pub(crate) fn partition_name(table: &str, tid: &Tid) -> String {
    let mut name = format!("{table}_");
    for b in tid.as_str().bytes() {
        if b.is_ascii_alphanumeric() {
            name.push(char::from(b));
        } else {
            name.push_str(&format!("_{b:02x}"));
        }
    }
    if name.len() > MAX_IDENT_BYTES {
        hashed_partition_name(table, tid)
    } else {
        name
    }
}

/// The other name a period's partition may have: `<table>__h<hash>`.
fn hashed_partition_name(table: &str, tid: &Tid) -> String {
    let h = xxhash_rust::xxh3::xxh3_64(tid.as_str().as_bytes());
    format!("{table}__h{h:016x}")
}

/// Longest identifier Postgres keeps (longer ones are cut silently).
pub(crate) const MAX_IDENT_BYTES: usize = 63;

/// The name a new partition of `tid` gets: [`partition_name`], unless a
/// relation of that name exists (a partition an older version named
/// another way), then the hashed name; never an existing relation's name.
pub(crate) fn free_partition_name(
    tx: &mut Transaction<'_>,
    ctx: &Ctx<'_>,
    tid: &Tid,
) -> Result<String, Error> {
    let candidates = [
        partition_name(&ctx.name, tid),
        hashed_partition_name(&ctx.name, tid),
    ];
    free_name(tx, ctx, &candidates)?.ok_or_else(|| Error::NameTaken {
        table: ctx.table.clone(),
        tid: tid.clone(),
        name: candidates[0].clone(),
    })
}

/// The first of `candidates` that no relation of the fact schema has.
fn free_name(
    tx: &mut Transaction<'_>,
    ctx: &Ctx<'_>,
    candidates: &[String],
) -> Result<Option<String>, Error> {
    for name in candidates {
        let taken = tx
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL",
                &[&qualified(&ctx.opts.schema, name)],
            )
            .map_err(Error::db(ctx.table, "naming a new relation"))?
            .get::<_, bool>(0);
        if !taken {
            return Ok(Some(name.clone()));
        }
    }
    Ok(None)
}

/// Removes the rows of `tid` values no period maps to: their partition is
/// detached and dropped (rows that landed elsewhere, in a default
/// partition, are deleted); how many rows went.
fn drop_values(
    tx: &mut Transaction<'_>,
    ctx: &Ctx<'_>,
    parent: u32,
    ty: &str,
    values: &[String],
) -> Result<u64, Error> {
    let mut rows = 0;
    for v in values {
        let lit: String = tx
            .query_one(
                &format!("SELECT quote_literal(($1::text::{ty})::text)"),
                &[v],
            )
            .map_err(Error::db(ctx.table, "formatting a partition bound"))?
            .get(0);
        match partition_for(tx, ctx, parent, &lit)? {
            Some(old) => {
                rows += count_rows(tx, ctx, &old, COUNTING)?;
                tx.batch_execute(&format!(
                    "ALTER TABLE {} DETACH PARTITION {old}; DROP TABLE {old}",
                    ctx.target
                ))
                .map_err(Error::db(ctx.table, "dropping a value's partition"))?;
            }
            None => {
                rows += tx
                    .execute(
                        &format!("DELETE FROM {} WHERE tid = {lit}", ctx.target),
                        &[],
                    )
                    .map_err(Error::db(ctx.table, "delete of a value no period has"))?;
            }
        }
    }
    Ok(rows)
}

/// A staged partition: its table and what was loaded.
struct Staged {
    table: String,
    literal: String,
    stats: PeriodStats,
}

/// Applies `delta` to the partitioned table `oid`; `prelude` statements
/// (column widenings) run first, in the same transaction.
pub(crate) fn apply_swap(
    client: &mut Client,
    ctx: &Ctx<'_>,
    oid: u32,
    delta: &Delta<'_>,
    prelude: &[String],
) -> Result<Outcome, Error> {
    let present = delta.present;
    let mut tx = begin(client, ctx.table, false)?;
    lock_target(&mut tx, ctx)?;
    for sql in prelude {
        tx.batch_execute(sql)
            .map_err(Error::db(ctx.table, "widening a column"))?;
    }
    let columns = table_columns(&mut tx, ctx.table, oid)?;
    let conv = conversion_for(ctx, &columns, delta)?;
    let all = delta.all();
    let values = tid_values(&conv, ctx.table, &all)?;
    check_against_stored(ctx, &conv, &all, &values)?;
    let ty = conv.columns[conv.tid].pg_type.clone();
    let stager = Stager {
        conv: &conv,
        ty: &ty,
        indexes: parent_indexes(&mut tx, ctx, oid)?,
    };
    let mut staged = Vec::with_capacity(present.len());
    for (i, tid) in present.iter().enumerate() {
        staged.push(stager.stage(&mut tx, ctx, i, tid, &values[i])?);
    }
    sync_state::crash::point("apply: copied, before delete");
    let history = history::prepare(&mut tx, ctx, &conv, delta, &values)?;
    let mut replaced: BTreeMap<usize, u64> = BTreeMap::new();
    let mut swapped = Vec::with_capacity(staged.len());
    for (i, s) in staged.iter().enumerate() {
        let (rows, name) = swap_one(&mut tx, ctx, oid, s, &present[i])?;
        replaced.insert(i, rows);
        swapped.push(qualified(&ctx.opts.schema, &name));
    }
    for (k, v) in values[present.len()..].iter().enumerate() {
        let lit = literal(&mut tx, ctx, &ty, v)?;
        if let Some(old) = partition_for(&mut tx, ctx, oid, &lit)? {
            replaced.insert(present.len() + k, count_rows(&mut tx, ctx, &old, COUNTING)?);
            tx.batch_execute(&format!(
                "ALTER TABLE {} DETACH PARTITION {old}; DROP TABLE {old}",
                ctx.target
            ))
            .map_err(Error::db(
                ctx.table,
                "dropping a removed period's partition",
            ))?;
        }
    }
    let extra_rows = drop_values(&mut tx, ctx, oid, &ty, delta.extra)?;
    let history_rows = match history {
        Some(h) => Some(record_history(&mut tx, ctx, &conv, h, &swapped)?),
        None => None,
    };
    let metadata = crate::meta::before_commit(&mut tx, ctx);
    sync_state::crash::point("apply: before commit");
    tx.commit().map_err(Error::db(ctx.table, "commit"))?;
    sync_state::crash::point("apply: committed");
    let inserted: BTreeMap<usize, u64> = staged
        .iter()
        .enumerate()
        .map(|(i, s)| (i, s.stats.sent))
        .collect();
    Ok(Outcome {
        periods: period_counts(&all, &replaced, &inserted),
        dropped: staged.iter().map(|s| s.stats.dropped).sum(),
        partition_swap: true,
        history_rows,
        extra_rows,
        metadata,
        ..Outcome::default()
    })
}

/// What every staging table of one apply shares: the conversion, the `tid`
/// column's type and the parent's indexes.
struct Stager<'a> {
    conv: &'a Conversion,
    ty: &'a str,
    indexes: Vec<ParentIndex>,
}

impl Stager<'_> {
    /// A staging table for the `i`-th period, `tid` (its value `value`): the
    /// parent's columns, the period's rows (binary COPY), the bound as a
    /// `CHECK`, the parent's indexes; its rows counted against the partition.
    fn stage(
        &self,
        tx: &mut Transaction<'_>,
        ctx: &Ctx<'_>,
        i: usize,
        tid: &Tid,
        value: &Cell<'_>,
    ) -> Result<Staged, Error> {
        let (conv, ty, indexes) = (self.conv, self.ty, &self.indexes);
        // `__stage` cannot be in a fact table's name (ids hold no `_`), nor in a
        // partition's (`__s` is no escape). A name someone else's table has is
        // passed over, never replaced: the apply never drops a relation it did
        // not create in this transaction.
        let candidates: Vec<String> = std::iter::once(format!("{}__stage{i}", ctx.name))
            .chain((1..10).map(|k| format!("{}__stage{i}_{k}", ctx.name)))
            .collect();
        let name = free_name(tx, ctx, &candidates)?.ok_or_else(|| Error::NameTaken {
            table: ctx.table.clone(),
            tid: tid.clone(),
            name: candidates[0].clone(),
        })?;
        let table = qualified(&ctx.opts.schema, &name);
        let lit = literal(tx, ctx, ty, value)?;
        tx.batch_execute(&format!(
            "CREATE TABLE {table} (LIKE {} INCLUDING DEFAULTS)",
            ctx.target
        ))
        .map_err(Error::db(ctx.table, "creating a staging partition"))?;
        let stats = copy_into(tx, ctx, conv, std::slice::from_ref(tid), &table)?
            .pop()
            .unwrap_or_default();
        let n = count_rows(tx, ctx, &table, COUNTING)?;
        if n != stats.sent {
            let e = Error::RowCount {
                table: ctx.table.clone(),
                tid: tid.clone(),
                expected: stats.sent,
                actual: n,
            };
            if ctx.opts.strict {
                return Err(e);
            }
            tracing::warn!(table = %ctx.table, error = %e, "row-count check failed (strict off)");
        }
        let tid_col = quote_ident("tid");
        let mut sql = format!(
        "ALTER TABLE {table} ADD CONSTRAINT {} CHECK ({tid_col} IS NOT NULL AND {tid_col} = {lit});",
        quote_ident(&format!("{name}_bound"))
    );
        for ix in indexes {
            sql.push_str(&format!(
                "CREATE {}INDEX ON {table} USING {} ({});",
                if ix.unique { "UNIQUE " } else { "" },
                ix.method,
                ix.columns
                    .iter()
                    .map(|c| quote_ident(c))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        tx.batch_execute(&sql)
            .map_err(Error::db(ctx.table, "indexing a staging partition"))?;
        Ok(Staged {
            table,
            literal: lit,
            stats,
        })
    }
}

/// Swaps one staged period in; returns the rows of the partition it
/// replaced (0 for a new period) and the new partition's name.
fn swap_one(
    tx: &mut Transaction<'_>,
    ctx: &Ctx<'_>,
    parent: u32,
    s: &Staged,
    tid: &Tid,
) -> Result<(u64, String), Error> {
    let old = partition_for(tx, ctx, parent, &s.literal)?;
    let mut sql = String::new();
    let mut replaced = 0;
    if let Some(old) = &old {
        replaced = count_rows(tx, ctx, old, COUNTING)?;
        sql.push_str(&format!(
            "ALTER TABLE {} DETACH PARTITION {old};",
            ctx.target
        ));
    }
    sql.push_str(&format!(
        "ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({});",
        ctx.target, s.table, s.literal
    ));
    if let Some(old) = &old {
        sql.push_str(&format!("DROP TABLE {old};"));
    }
    tx.batch_execute(&sql)
        .map_err(Error::db(ctx.table, "swapping a period's partition"))?;
    // Named once the old partition is gone (it may have had that name).
    let canonical = free_partition_name(tx, ctx, tid)?;
    tx.batch_execute(&format!(
        "ALTER TABLE {} RENAME TO {}",
        s.table,
        quote_ident(&canonical)
    ))
    .map_err(Error::db(ctx.table, "naming a period's partition"))?;
    Ok((replaced, canonical))
}

/// History of swapped periods: the new versions are the rows of their new
/// partitions (`swapped`, qualified names).
fn record_history(
    tx: &mut Transaction<'_>,
    ctx: &Ctx<'_>,
    conv: &Conversion,
    pending: history::Pending<'_>,
    swapped: &[String],
) -> Result<u64, Error> {
    if swapped.is_empty() {
        return Ok(0);
    }
    let cols = crate::tx::column_list(conv);
    let union = swapped
        .iter()
        .map(|n| format!("SELECT {cols} FROM {n}"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    pending.record_from(tx, ctx, conv, &format!("({union})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_are_readable_bounded_and_one_to_one() {
        let t = |s: &str| Tid::new(s).expect("tid");
        assert_eq!(partition_name("folk1a", &t("2024K1")), "folk1a_2024K1");
        assert_eq!(
            partition_name("scene01a", &t("2020/2021")),
            "scene01a_2020_2f2021"
        );
        let long = partition_name("x", &t(&"9".repeat(80)));
        assert!(long.len() <= MAX_IDENT_BYTES, "{long}");
        assert!(long.starts_with("x__h"), "{long}");
        for (a, b) in [
            ("Æ", "Ø"),
            ("2023k1", "2023K1"),
            ("2020/2021", "2020-2021"),
            ("a_b", "a_5fb"),
        ] {
            assert_ne!(
                partition_name("x", &t(a)),
                partition_name("x", &t(b)),
                "{a} {b}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn partition_names_never_collide(a in "\\PC{1,30}", b in "\\PC{1,30}") {
            if let (Ok(ta), Ok(tb)) = (Tid::new(a.clone()), Tid::new(b.clone())) {
                let (na, nb) = (partition_name("folk1a", &ta), partition_name("folk1a", &tb));
                proptest::prop_assert!(na.len() <= MAX_IDENT_BYTES);
                proptest::prop_assert_eq!(na == nb, a == b);
                // Never a fact table's name, nor a staging table's.
                proptest::prop_assert!(na.starts_with("folk1a_") && !na.contains("__stage"));
            }
        }
    }
}
