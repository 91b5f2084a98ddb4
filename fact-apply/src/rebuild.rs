//! When the partitions no longer fit the fact table: the schema comparison
//! after a schema change upstream, the whole-table rebuild
//! (`--on-schema-change rebuild`), and the widening of columns whose type
//! is too narrow for new values.
//!
//! A rebuild creates a new table with the partitions' columns in their
//! order (surviving columns keep their types, widened if too narrow; new
//! columns typed as `--create-missing` types them), loads every partition
//! of the table with a binary COPY, recreates the old table's indexes by
//! column name (new columns get the index `--create-missing` gives them),
//! copies the grants, and swaps the new table in by rename, dropping the
//! old one, all in one transaction. A concurrent reader sees the old table
//! until the commit and the new one after it (a query blocked on the swap's
//! lock looks the name up again), never an empty or partial table.

use std::collections::BTreeMap;

use postgres::{Client, Transaction};
use sync_state::{Tid, TypeChange};

use crate::catalog::{qualified, quote_ident, table_columns, table_oid, PgKind, TargetColumn};
use crate::conversion::Conversion;
use crate::convert::column_name;
use crate::history;
use crate::infer::{infer_table, InferredTable};
use crate::tx::{
    begin, build_conversion, copy_into, count_rows, grouped_count, lock_target, period_counts,
    tid_column, tid_values, Ctx, Delta, Loaded, Outcome,
};
use crate::Error;

/// How the partitions' columns differ from the fact table's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ColumnDiff {
    /// Partition columns the table lacks.
    pub(crate) added: Vec<String>,
    /// Table columns the partitions lack.
    pub(crate) removed: Vec<String>,
}

impl ColumnDiff {
    pub(crate) fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// Compares the columns of `tid`'s partition (names as the apply maps them)
/// with the fact table's.
pub(crate) fn compare_columns(
    client: &mut Client,
    ctx: &Ctx<'_>,
    oid: u32,
    tid: &Tid,
) -> Result<ColumnDiff, Error> {
    let footer = ctx
        .store
        .footer(ctx.table, tid)
        .map_err(|source| Error::Read {
            table: ctx.table.clone(),
            tid: tid.clone(),
            path: ctx.store.display_partition(ctx.table, tid),
            source: Box::new(source),
        })?;
    let partition: Vec<String> = footer.columns.iter().map(|c| column_name(c)).collect();
    let target: Vec<String> = table_columns(client, ctx.table, oid)?
        .into_iter()
        .map(|c| c.name)
        .collect();
    Ok(ColumnDiff {
        added: partition
            .iter()
            .filter(|c| !target.contains(c))
            .cloned()
            .collect(),
        removed: target
            .iter()
            .filter(|c| !partition.contains(c))
            .cloned()
            .collect(),
    })
}

/// The type `old` must become to hold values up to `needed` (the inferred
/// type of the new values) and `max_chars` long; `None` when it holds them.
pub(crate) fn widened(old: &TargetColumn, needed: &str, max_chars: usize) -> Option<String> {
    let int_rank = |t: &str| match t {
        "smallint" => Some(1),
        "integer" => Some(2),
        "bigint" => Some(3),
        _ => None,
    };
    let have = match old.ty.as_ref().and_then(|t| PgKind::of(t, old.typmod))? {
        PgKind::Text { max_chars: Some(n) } if max_chars > n => {
            return Some(format!("varchar({max_chars})"))
        }
        PgKind::Int2 => 1,
        PgKind::Int4 => 2,
        PgKind::Int8 => 3,
        _ => return None,
    };
    {
        {
            match int_rank(needed) {
                Some(r) if r > have => Some(needed.to_string()),
                Some(_) => None,
                // A first code that is not an integer: text from now on.
                None if needed.starts_with("varchar") || needed == "text" => Some("text".into()),
                None => None,
            }
        }
    }
}

/// The widenings the partitions of `tids` need in the target's columns:
/// `(column, old type, new type)`.
pub(crate) fn needed_widenings(
    client: &mut Client,
    ctx: &Ctx<'_>,
    oid: u32,
    tids: &[Tid],
) -> Result<Vec<TypeChange>, Error> {
    let inferred = infer_table(ctx.store, ctx.table, tids)?;
    let columns = table_columns(client, ctx.table, oid)?;
    Ok(widenings(&columns, &inferred))
}

fn widenings(columns: &[TargetColumn], inferred: &InferredTable) -> Vec<TypeChange> {
    let mut out = Vec::new();
    for ((name, needed), max_chars) in inferred.columns.iter().zip(&inferred.max_chars) {
        if name == "tid" || name == "indhold" {
            continue;
        }
        if let Some(old) = columns.iter().find(|c| &c.name == name) {
            if let Some(new) = widened(old, needed, *max_chars) {
                out.push(TypeChange {
                    column: name.clone(),
                    old_type: old.type_name.clone(),
                    new_type: new,
                    value: None,
                    tid: None,
                });
            }
        }
    }
    out
}

/// `ALTER TABLE … ALTER COLUMN … TYPE …` for each widening (a wider
/// `varchar` is a catalogue-only change; integer to text rewrites).
pub(crate) fn widen_sql(target: &str, changes: &[TypeChange]) -> Vec<String> {
    changes
        .iter()
        .map(|c| {
            let col = quote_ident(&c.column);
            format!(
                "ALTER TABLE {target} ALTER COLUMN {col} TYPE {} USING {col}::{}",
                c.new_type, c.new_type
            )
        })
        .collect()
}

/// What a rebuild did besides the row counts.
pub(crate) struct Rebuilt {
    pub(crate) outcome: Outcome,
    pub(crate) type_changes: Vec<TypeChange>,
}

/// Rebuilds the fact table `oid` from every partition of the table and
/// swaps it in (see the module documentation).
pub(crate) fn rebuild(client: &mut Client, ctx: &Ctx<'_>, oid: u32) -> Result<Rebuilt, Error> {
    let tids: Vec<Tid> = ctx
        .store
        .list_tids(ctx.table)
        .map_err(|source| Error::List {
            table: ctx.table.clone(),
            source: Box::new(source),
        })?
        .into_iter()
        .collect();
    let inferred = infer_table(ctx.store, ctx.table, &tids)?;
    let mut tx = begin(client, ctx.table, false)?;
    lock_target(&mut tx, ctx)?;
    let old_columns = table_columns(&mut tx, ctx.table, oid)?;
    let type_changes = widenings(&old_columns, &inferred);
    let defs = new_definitions(&old_columns, &inferred, &type_changes);
    let names = RebuildNames::new(ctx);
    tx.batch_execute(&format!(
        "CREATE TABLE {} ({})",
        names.new_qualified,
        defs.iter()
            .map(|(n, t)| format!("{} {t}", quote_ident(n)))
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .map_err(Error::db(ctx.table, "creating the rebuilt table"))?;
    let new_oid = table_oid(&mut tx, &ctx.opts.schema, &names.new_name)
        .map_err(Error::db(ctx.table, "looking up the rebuilt table"))?
        .ok_or_else(|| Error::NoPeriods {
            table: ctx.table.clone(),
        })?;
    let columns = table_columns(&mut tx, ctx.table, new_oid)?;
    let conv = build_conversion(ctx.store, ctx.table, &names.new_qualified, &columns, &tids)?;
    let values = tid_values(&conv, ctx.table, &tids)?;
    let old_rows = count_rows(&mut tx, ctx, &ctx.target, "counting the old rows")?;
    let stats = copy_into(&mut tx, ctx, &conv, &tids, &names.new_qualified)?;
    let loaded = Loaded {
        tids: &tids,
        values: &values,
        stats: &stats,
        inserted: stats.iter().map(|s| s.sent).sum(),
    };
    let inserted = check_rebuilt_rows(&mut tx, ctx, &conv, &names, &loaded)?;
    let renames = recreate_indexes(&mut tx, ctx, oid, &names, &defs, &old_columns)?;
    copy_grants(&mut tx, ctx, oid, &names)?;
    // History before the swap: on first use it is seeded from the old
    // table, and the periods the new set lacks are closed.
    let history = history::prepare(&mut tx, ctx, &conv, &Delta::load_all(&tids), &values)?;
    if let Some(h) = &history {
        h.close_absent(&mut tx, ctx)?;
    }
    swap_in(&mut tx, ctx, &names, &renames)?;
    let history_rows = match history {
        Some(h) => Some(h.record_from(&mut tx, ctx, &conv, &ctx.target)?),
        None => None,
    };
    let metadata = crate::meta::before_commit(&mut tx, ctx);
    sync_state::crash::point("apply: before commit");
    tx.commit().map_err(Error::db(ctx.table, "commit"))?;
    sync_state::crash::point("apply: committed");
    Ok(Rebuilt {
        outcome: Outcome {
            periods: period_counts(&tids, &BTreeMap::new(), &inserted),
            dropped: stats.iter().map(|s| s.dropped).sum(),
            history_rows,
            replaced_rows: Some(old_rows),
            metadata,
            ..Outcome::default()
        },
        type_changes,
    })
}

/// Each period of the rebuilt table must hold its partition's rows (less
/// the dropped ones); returns them by position in `tids`.
fn check_rebuilt_rows(
    tx: &mut Transaction<'_>,
    ctx: &Ctx<'_>,
    conv: &Conversion,
    names: &RebuildNames,
    loaded: &Loaded<'_, '_>,
) -> Result<BTreeMap<usize, u64>, Error> {
    let (tids, values, stats) = (loaded.tids, loaded.values, loaded.stats);
    let inserted = grouped_count(
        tx,
        ctx.table,
        &names.new_qualified,
        &tid_column(conv),
        values,
        "counting the rebuilt rows",
    )?;
    for (i, (tid, s)) in tids.iter().zip(stats).enumerate() {
        let actual = inserted.get(&i).copied().unwrap_or(0);
        if actual != s.sent {
            let e = Error::RowCount {
                table: ctx.table.clone(),
                tid: tid.clone(),
                expected: s.sent,
                actual,
            };
            if ctx.opts.strict {
                return Err(e);
            }
            tracing::warn!(table = %ctx.table, error = %e, "row-count check failed (strict off)");
        }
    }
    Ok(inserted)
}

/// The new table's columns: the partitions' columns in their order;
/// surviving columns keep their type (widened where needed), new ones get
/// the inferred type.
fn new_definitions(
    old: &[TargetColumn],
    inferred: &InferredTable,
    widen: &[TypeChange],
) -> Vec<(String, String)> {
    inferred
        .columns
        .iter()
        .map(|(name, ty)| {
            let t = match (
                widen.iter().find(|w| &w.column == name),
                old.iter().find(|c| &c.name == name),
            ) {
                (Some(w), _) => w.new_type.clone(),
                (None, Some(c)) => c.type_name.clone(),
                (None, None) => ty.clone(),
            };
            (name.clone(), t)
        })
        .collect()
}

/// Names used while the rebuilt table is built next to the old one.
struct RebuildNames {
    new_name: String,
    new_qualified: String,
    old_name: String,
}

impl RebuildNames {
    fn new(ctx: &Ctx<'_>) -> RebuildNames {
        // Identifiers are at most 63 bytes; table ids are short ASCII.
        let base: String = ctx.name.chars().take(40).collect();
        let new_name = format!("{base}__statbank_rebuild");
        let old_name = format!("{base}__statbank_replaced");
        RebuildNames {
            new_qualified: qualified(&ctx.opts.schema, &new_name),
            new_name,
            old_name,
        }
    }
}

/// Recreates the old table's indexes whose columns all survive (by column
/// name, same method and uniqueness; expression and partial indexes are not
/// carried over), and indexes new columns as `--create-missing` would.
/// Returns `(temporary name, original name)` pairs to rename after the swap.
fn recreate_indexes(
    tx: &mut Transaction<'_>,
    ctx: &Ctx<'_>,
    old_oid: u32,
    names: &RebuildNames,
    defs: &[(String, String)],
    old_columns: &[TargetColumn],
) -> Result<Vec<(String, String)>, Error> {
    let rows = tx
        .query(
            "SELECT ic.relname::text, am.amname::text, i.indisunique, \
                    i.indexprs IS NOT NULL OR i.indpred IS NOT NULL, \
                    array(SELECT a.attname::text FROM unnest(i.indkey) WITH ORDINALITY k(attnum, n) \
                          JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                          ORDER BY k.n) \
             FROM pg_catalog.pg_index i \
             JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid \
             JOIN pg_catalog.pg_am am ON am.oid = ic.relam \
             WHERE i.indrelid = $1 ORDER BY ic.relname",
            &[&old_oid],
        )
        .map_err(Error::db(ctx.table, "reading the old indexes"))?;
    let keep: Vec<&str> = defs.iter().map(|(n, _)| n.as_str()).collect();
    let mut renames = Vec::new();
    let mut sqls = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let name: String = r.get(0);
        let method: String = r.get(1);
        let unique: bool = r.get(2);
        let special: bool = r.get(3);
        let cols: Vec<String> = r.get(4);
        if special || cols.is_empty() || !cols.iter().all(|c| keep.contains(&c.as_str())) {
            tracing::warn!(table = %ctx.table, index = %name, "index not carried over to the rebuilt table");
            continue;
        }
        let tmp = format!(
            "{}_rb{i}",
            names.new_name.chars().take(50).collect::<String>()
        );
        sqls.push(format!(
            "CREATE {}INDEX {} ON {} USING {method} ({})",
            if unique { "UNIQUE " } else { "" },
            quote_ident(&tmp),
            names.new_qualified,
            cols.iter()
                .map(|c| quote_ident(c))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        renames.push((tmp, name));
    }
    for (n, t) in defs {
        let is_new = !old_columns.iter().any(|c| &c.name == n);
        if is_new && n != "indhold" {
            let method = if t == "int4range" { "gist" } else { "btree" };
            sqls.push(format!(
                "CREATE INDEX ON {} USING {method} ({})",
                names.new_qualified,
                quote_ident(n)
            ));
        }
    }
    for sql in sqls {
        tx.batch_execute(&sql)
            .map_err(Error::db(ctx.table, "indexing the rebuilt table"))?;
    }
    Ok(renames)
}

/// The old table's privileges, granted on the new one.
fn copy_grants(
    tx: &mut Transaction<'_>,
    ctx: &Ctx<'_>,
    old_oid: u32,
    names: &RebuildNames,
) -> Result<(), Error> {
    let rows = tx
        .query(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(a.grantee::regrole::text) END, \
                    a.privilege_type \
             FROM pg_catalog.pg_class c, aclexplode(c.relacl) a \
             WHERE c.oid = $1 AND a.grantee <> c.relowner",
            &[&old_oid],
        )
        .map_err(Error::db(ctx.table, "reading the old grants"))?;
    for r in rows {
        let grantee: String = r.get(0);
        let privilege: String = r.get(1);
        tx.batch_execute(&format!(
            "GRANT {privilege} ON {} TO {grantee}",
            names.new_qualified
        ))
        .map_err(Error::db(ctx.table, "granting on the rebuilt table"))?;
    }
    Ok(())
}

/// Renames the old table away and the new one into its place, drops the
/// old one and gives the recreated indexes their old names.
fn swap_in(
    tx: &mut Transaction<'_>,
    ctx: &Ctx<'_>,
    names: &RebuildNames,
    renames: &[(String, String)],
) -> Result<(), Error> {
    crate::meta::before_table_drop(tx, ctx)?;
    let schema = quote_ident(&ctx.opts.schema);
    let mut sql = format!(
        "ALTER TABLE {} RENAME TO {}; ALTER TABLE {} RENAME TO {}; DROP TABLE {}.{};",
        ctx.target,
        quote_ident(&names.old_name),
        names.new_qualified,
        quote_ident(&ctx.name),
        schema,
        quote_ident(&names.old_name),
    );
    for (tmp, orig) in renames {
        sql.push_str(&format!(
            "ALTER INDEX {schema}.{} RENAME TO {};",
            quote_ident(tmp),
            quote_ident(orig)
        ));
    }
    sync_state::crash::point("apply: rebuilt, before swap");
    tx.batch_execute(&sql)
        .map_err(Error::db(ctx.table, "swapping the rebuilt table in"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_types::Type;

    fn col(ty: Type, typmod: i32, name: &str) -> TargetColumn {
        TargetColumn {
            name: "c".into(),
            type_name: name.into(),
            ty: Some(ty),
            typmod,
            not_null: false,
            has_default: false,
            generated: false,
        }
    }

    #[test]
    fn widening_rules() {
        let v3 = col(Type::VARCHAR, 3 + 4, "character varying(3)");
        assert_eq!(widened(&v3, "varchar(5)", 5).as_deref(), Some("varchar(5)"));
        assert_eq!(widened(&v3, "varchar(2)", 2), None);
        let s = col(Type::INT2, -1, "smallint");
        assert_eq!(widened(&s, "integer", 6).as_deref(), Some("integer"));
        assert_eq!(widened(&s, "smallint", 3), None);
        assert_eq!(widened(&s, "varchar(4)", 4).as_deref(), Some("text"));
        let t = col(Type::TEXT, -1, "text");
        assert_eq!(widened(&t, "varchar(90)", 90), None);
    }
}
