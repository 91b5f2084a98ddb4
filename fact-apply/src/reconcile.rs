//! Reconcile: does each fact table hold exactly what the mirror holds, and
//! the repair of what it does not.
//!
//! For every table with partitions, each period is compared by a digest
//! computed on both sides over the same bytes: the rows as the apply would
//! load them (its conversion of every partition, rows with a missing
//! `indhold` dropped), each encoded as its binary COPY fields, hashed
//! (xxh3-128) and summed per period with the row count: an
//! order-independent digest that a missing, added, duplicated or changed
//! row changes. The mirror's side streams the partitions; the database's
//! streams `COPY (SELECT …) TO STDOUT (FORMAT binary)` of the table in one
//! snapshot (a read-only transaction that blocks no reader). Only the
//! periods whose digests differ are then read again, on both sides, in a
//! fresh snapshot: a period that agrees then (an apply committed in
//! between) is not reported, and for those that still differ the rows of
//! each side that the other lacks are counted and shown.
//!
//! The repair applies exactly the periods found through the apply's own
//! paths, in one transaction per table: missing and differing periods are
//! re-loaded (delete and insert, or a partition swap), values no period
//! has are deleted, a missing table is created; every other period's rows
//! are left as they are.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use partition_store::PartitionStore;
use postgres::binary_copy::BinaryCopyOutIter;
use postgres::fallible_iterator::FallibleIterator;
use postgres::Client;
use postgres_types::{FromSql, IsNull, ToSql, Type};
use sync_state::{
    shorten_error, ApplyStatus, DataDir, Examples, PeriodDifference, ReconcileReport,
    ReconcileStatus, ReconcileSummary, RunId, TableId, TableReconcile, Tid, UtcSecond,
    EXAMPLE_ROWS,
};

use crate::catalog::{quote_ident, table_columns, table_oid};
use crate::conversion::{stream_partition, Conversion};
use crate::convert::Cell;
use crate::error::error_chain;
use crate::tx::{build_conversion, tid_values, Ctx};
use crate::{apply_table, ApplyOptions, Error, TableWork};

/// What to reconcile, and whether to repair.
#[derive(Debug, Clone, Default)]
pub struct ReconcileOptions {
    /// The apply's settings: the schema compared, and for a repair how it
    /// applies (`history`, `strict`, `on_schema_change`, `partitioned`
    /// for a table it has to create; `dry_run`: nothing is written, not
    /// even the report).
    pub apply: ApplyOptions,
    /// Only these tables (default: every table with partitions).
    pub tables: Option<Vec<TableId>>,
    /// Repair what differs.
    pub repair: bool,
}

/// Compares every table of `opts.tables` (default: every table with
/// partitions) with its fact table, repairs what differs when asked, and
/// writes the report to `_sync/reconcile/<id>.json` (unless a dry run).
///
/// Errors only when the tables cannot be listed or the report cannot be
/// written; a table that cannot be compared is `failed` in the report.
/// Blocking, like the apply.
pub fn reconcile(
    client: &mut Client,
    data: &DataDir,
    id: &RunId,
    opts: &ReconcileOptions,
) -> Result<ReconcileReport, Error> {
    crate::table::validate_schema(&opts.apply)?;
    let started_at = UtcSecond::new(chrono::Utc::now());
    let store = PartitionStore::new(data);
    let tables = match &opts.tables {
        Some(t) => t.clone(),
        None => store.list_tables().map_err(|source| Error::ListTables {
            source: Box::new(source),
        })?,
    };
    let mut report = ReconcileReport {
        reconcile_id: id.clone(),
        started_at,
        finished_at: None,
        status: ReconcileStatus::Agrees,
        repair: opts.repair,
        schema: opts.apply.schema.clone(),
        tables: Default::default(),
        summary: ReconcileSummary::default(),
        extra: Default::default(),
    };
    for table in tables {
        let mut r = reconcile_table(client, &store, &table, &opts.apply);
        if opts.repair && r.has_differences() && r.status != ReconcileStatus::Failed {
            repair(client, &store, &table, &opts.apply, &mut r);
        }
        log_result(&table, &r);
        report.tables.insert(table, r);
    }
    report.summary = ReconcileSummary::of(&report.tables);
    report.status = overall(&report.summary);
    report.finished_at = Some(UtcSecond::new(chrono::Utc::now()));
    if !opts.apply.dry_run {
        report.save(data).map_err(|source| Error::SaveReconcile {
            id: id.clone(),
            source: Box::new(source),
        })?;
    }
    Ok(report)
}

fn overall(s: &ReconcileSummary) -> ReconcileStatus {
    if s.tables_failed > 0 {
        ReconcileStatus::Failed
    } else if s.tables_differ > 0 {
        ReconcileStatus::Differs
    } else if s.tables_repaired > 0 {
        ReconcileStatus::Repaired
    } else {
        ReconcileStatus::Agrees
    }
}

fn log_result(table: &TableId, r: &TableReconcile) {
    match r.status {
        ReconcileStatus::Agrees => {
            tracing::info!(table = %table, rows = r.rows_compared, secs = r.duration_seconds, "table agrees with the mirror")
        }
        ReconcileStatus::Failed => {
            tracing::error!(table = %table, error = r.error.as_deref().unwrap_or(""), "reconcile failed")
        }
        status => tracing::warn!(
            table = %table,
            %status,
            missing_in_db = r.missing_in_db.len(),
            extra_in_db = r.extra_in_db.len(),
            differs = r.differs.len(),
            "table differs from the mirror"
        ),
    }
}

/// One table's comparison (never an error: a failure is the `failed`
/// result).
pub fn reconcile_table(
    client: &mut Client,
    store: &PartitionStore,
    table: &TableId,
    opts: &ApplyOptions,
) -> TableReconcile {
    let t0 = Instant::now();
    let mut r = match compare(client, store, table, opts) {
        Ok(r) => r,
        Err(e) => TableReconcile::failed(error_chain(&e)),
    };
    r.duration_seconds = t0.elapsed().as_secs_f64();
    r
}

fn compare(
    client: &mut Client,
    store: &PartitionStore,
    table: &TableId,
    opts: &ApplyOptions,
) -> Result<TableReconcile, Error> {
    let ctx = Ctx::new(store, table, opts);
    let tids: Vec<Tid> = store
        .list_tids(table)
        .map_err(|source| Error::List {
            table: table.clone(),
            source: Box::new(source),
        })?
        .into_iter()
        .collect();
    let oid = table_oid(client, &opts.schema, &ctx.name)
        .map_err(Error::db(table, "looking up the target table"))?;
    let Some(oid) = oid else {
        let mut r = TableReconcile::agrees();
        r.status = ReconcileStatus::MissingTable;
        r.missing_in_db = tids;
        return Ok(r);
    };
    if tids.is_empty() {
        return Ok(TableReconcile::agrees());
    }
    let columns = table_columns(client, table, oid)?;
    let conv = build_conversion(store, table, &ctx.target, &columns, &tids)?;
    let side = Sides::new(&ctx, &conv, &tids)?;
    let every: Vec<usize> = (0..tids.len()).collect();
    // The whole table, in one snapshot.
    let mirror = side.mirror(&every)?;
    let db = side.database(client, Scope::All)?;
    let mut r = TableReconcile::agrees();
    r.rows_compared = mirror.iter().map(|d| d.rows).sum::<u64>() + db.rows();
    let suspects: Vec<usize> = every
        .iter()
        .copied()
        .filter(|&i| mirror[i] != db.periods[i])
        .collect();
    if suspects.is_empty() && db.extra.is_empty() {
        return Ok(r);
    }
    sync_state::crash::point("reconcile: compared, before the recheck");
    // Again, for the suspects only, in a fresh snapshot: what agrees now
    // was an apply committing in between.
    side.recheck(client, &suspects, &mut r)?;
    if !db.extra.is_empty() {
        let again = side.database(client, Scope::NoPeriod)?;
        r.extra_in_db = side.extra_values(client, &again)?;
    }
    if r.has_differences() {
        r.status = ReconcileStatus::Differs;
    }
    Ok(r)
}

/// An order-independent digest of a multiset of rows: their count and the
/// wrapping sums of the two halves of their hashes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Digest {
    rows: u64,
    lo: u64,
    hi: u64,
}

impl Digest {
    fn add(&mut self, h: u128) {
        self.rows += 1;
        self.lo = self.lo.wrapping_add(h as u64);
        self.hi = self.hi.wrapping_add((h >> 64) as u64);
    }
}

/// The database's digests: one per period of the mirror (by position),
/// and one per `tid` value no period maps to (by its binary value).
struct DbDigests {
    periods: Vec<Digest>,
    extra: HashMap<Vec<u8>, Digest>,
}

impl DbDigests {
    fn rows(&self) -> u64 {
        self.periods.iter().map(|d| d.rows).sum::<u64>()
            + self.extra.values().map(|d| d.rows).sum::<u64>()
    }
}

/// What both sides of one table's comparison share.
struct Sides<'a> {
    ctx: &'a Ctx<'a>,
    conv: &'a Conversion,
    /// The mirror's periods.
    tids: &'a [Tid],
    types: Vec<Type>,
    /// Each period's binary `tid` value → its position in `tids`.
    keys: HashMap<Vec<u8>, usize>,
    /// Each period's `tid` value as an SQL literal.
    literals: Vec<String>,
}

impl<'a> Sides<'a> {
    fn new(ctx: &'a Ctx<'a>, conv: &'a Conversion, tids: &'a [Tid]) -> Result<Sides<'a>, Error> {
        let types = conv.types();
        let values = tid_values(conv, ctx.table, tids)?;
        let ty = &types[conv.tid];
        let mut keys = HashMap::with_capacity(tids.len());
        let mut literals = Vec::with_capacity(tids.len());
        for (i, v) in values.iter().enumerate() {
            let mut buf = BytesMut::new();
            if let Ok(IsNull::No) = v.to_sql(ty, &mut buf) {
                keys.insert(buf.to_vec(), i);
            }
            literals.push(format!("'{}'", v.to_string().replace('\'', "''")));
        }
        Ok(Sides {
            ctx,
            conv,
            tids,
            types,
            keys,
            literals,
        })
    }

    /// The mirror's digest of the periods at `positions`.
    fn mirror(&self, positions: &[usize]) -> Result<Vec<Digest>, Error> {
        let mut out = vec![Digest::default(); positions.len()];
        let mut buf = BytesMut::new();
        for (k, &p) in positions.iter().enumerate() {
            let d = &mut out[k];
            let mut sink = |cells: &[Cell<'_>]| {
                encode_cells(cells, &self.types, &mut buf);
                d.add(xxhash_rust::xxh3::xxh3_128(&buf));
                Ok(())
            };
            stream_partition(
                self.ctx.store,
                self.ctx.table,
                &self.tids[p],
                self.conv,
                &mut sink,
            )?;
        }
        Ok(out)
    }

    /// The columns the comparison reads, as the apply writes them
    /// (`char(n)` read as text: its padding is not the value).
    fn select_list(&self) -> String {
        self.conv
            .columns
            .iter()
            .map(|c| {
                if c.ty == Type::BPCHAR {
                    format!("{}::text", quote_ident(&c.name))
                } else {
                    quote_ident(&c.name)
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The rows the database digests read: all (`Scope::All`), those of
    /// some periods, or those of no period.
    fn filter(&self, scope: Scope<'_>) -> String {
        let tid_col = quote_ident(&self.conv.columns[self.conv.tid].name);
        match scope {
            Scope::All => String::new(),
            Scope::NoPeriod if self.literals.is_empty() => String::new(),
            Scope::NoPeriod => format!(
                " WHERE {tid_col} IS NULL OR {tid_col} NOT IN ({})",
                self.typed_literals(0..self.literals.len())
            ),
            Scope::Periods(ix) => format!(
                " WHERE {tid_col} IN ({})",
                self.typed_literals(ix.iter().copied())
            ),
        }
    }

    /// The database's digests of the rows in `scope`, in one read-only
    /// snapshot (`COPY … TO STDOUT (FORMAT binary)`).
    fn database(&self, client: &mut Client, scope: Scope<'_>) -> Result<DbDigests, Error> {
        let table = self.ctx.table;
        let sql = format!(
            "COPY (SELECT {} FROM {}{}) TO STDOUT (FORMAT binary)",
            self.select_list(),
            self.ctx.target,
            self.filter(scope)
        );
        let mut tx = snapshot(client, table)?;
        let mut out = DbDigests {
            periods: vec![Digest::default(); self.literals.len()],
            extra: HashMap::new(),
        };
        {
            let reader = tx
                .copy_out(&sql)
                .map_err(Error::db(table, "reading the fact table"))?;
            let mut rows = BinaryCopyOutIter::new(reader, &self.types);
            let mut buf = BytesMut::new();
            let reading = |e| Error::db(table, "reading the fact table")(e);
            while let Some(row) = rows.next().map_err(reading)? {
                buf.clear();
                let mut tid: Option<&[u8]> = None;
                for i in 0..self.types.len() {
                    let Raw(field) = row.try_get::<Raw<'_>>(i).map_err(reading)?;
                    put_field(&mut buf, field);
                    if i == self.conv.tid {
                        tid = field;
                    }
                }
                let h = xxhash_rust::xxh3::xxh3_128(&buf);
                let key = tid.unwrap_or_default();
                match self.keys.get(key) {
                    Some(&p) => out.periods[p].add(h),
                    None => out.extra.entry(key.to_vec()).or_default().add(h),
                }
            }
        }
        tx.commit()
            .map_err(Error::db(table, "ending the read-only transaction"))?;
        Ok(out)
    }

    /// `'v1'::type, 'v2'::type, …` of the periods at `ix`.
    fn typed_literals(&self, ix: impl Iterator<Item = usize>) -> String {
        let ty = &self.conv.columns[self.conv.tid].pg_type;
        ix.map(|i| format!("{}::{ty}", self.literals[i]))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Reads the suspect periods again on both sides and records those that
    /// still differ: missing from the database, or differing row by row.
    fn recheck(
        &self,
        client: &mut Client,
        suspects: &[usize],
        r: &mut TableReconcile,
    ) -> Result<(), Error> {
        let mirror = self.mirror(suspects)?;
        let db = self.database(client, Scope::Periods(suspects))?;
        for (k, &p) in suspects.iter().enumerate() {
            let (m, d) = (mirror[k], db.periods[p]);
            if m == d {
                continue;
            }
            if d.rows == 0 {
                r.missing_in_db.push(self.tids[p].clone());
                continue;
            }
            r.differs.push(self.row_diff(client, p, m, d)?);
        }
        Ok(())
    }

    /// Which rows of period `p` only one side has: each side's rows by
    /// hash, with their multiplicity and one of them as text.
    fn row_diff(
        &self,
        client: &mut Client,
        p: usize,
        mirror: Digest,
        db: Digest,
    ) -> Result<PeriodDifference, Error> {
        let mine = self.mirror_rows(p)?;
        let theirs = self.database_rows(client, p)?;
        let mut diff = PeriodDifference {
            tid: self.tids[p].clone(),
            mirror_rows: mirror.rows,
            db_rows: db.rows,
            only_in_mirror: 0,
            only_in_db: 0,
            examples: Examples::default(),
        };
        for (h, (n, text)) in &mine {
            let m = theirs.get(h).map_or(0, |t| t.0);
            if *n > m {
                diff.only_in_mirror += n - m;
                if diff.examples.only_in_mirror.len() < EXAMPLE_ROWS {
                    diff.examples.only_in_mirror.push(text.clone());
                }
            }
        }
        for (h, (n, text)) in &theirs {
            let m = mine.get(h).map_or(0, |t| t.0);
            if *n > m {
                diff.only_in_db += n - m;
                if diff.examples.only_in_db.len() < EXAMPLE_ROWS {
                    diff.examples.only_in_db.push(text.clone());
                }
            }
        }
        diff.examples.only_in_mirror.sort();
        diff.examples.only_in_db.sort();
        Ok(diff)
    }

    /// Period `p`'s rows in the mirror: hash → (count, the row as text).
    fn mirror_rows(&self, p: usize) -> Result<HashMap<u128, (u64, String)>, Error> {
        let mut out: HashMap<u128, (u64, String)> = HashMap::new();
        let mut buf = BytesMut::new();
        let names: Vec<&str> = self.conv.columns.iter().map(|c| c.name.as_str()).collect();
        let mut sink = |cells: &[Cell<'_>]| {
            encode_cells(cells, &self.types, &mut buf);
            let e = out
                .entry(xxhash_rust::xxh3::xxh3_128(&buf))
                .or_insert_with(|| (0, row_text(&names, cells.iter().map(|c| c.to_string()))));
            e.0 += 1;
            Ok(())
        };
        stream_partition(
            self.ctx.store,
            self.ctx.table,
            &self.tids[p],
            self.conv,
            &mut sink,
        )?;
        Ok(out)
    }

    /// Period `p`'s rows in the database: hash → (count, the row as text).
    fn database_rows(
        &self,
        client: &mut Client,
        p: usize,
    ) -> Result<HashMap<u128, (u64, String)>, Error> {
        let table = self.ctx.table;
        let reading = |e| Error::db(table, "reading a period's rows")(e);
        let n = self.types.len();
        let texts: Vec<String> = self
            .conv
            .columns
            .iter()
            .map(|c| format!("coalesce({}::text, 'NULL')", quote_ident(&c.name)))
            .collect();
        let sql = format!(
            "SELECT {}, {} FROM {}{}",
            self.select_list(),
            texts.join(", "),
            self.ctx.target,
            self.filter(Scope::Periods(&[p]))
        );
        let mut tx = snapshot(client, table)?;
        let rows = tx.query(&sql, &[]).map_err(reading)?;
        let names: Vec<&str> = self.conv.columns.iter().map(|c| c.name.as_str()).collect();
        let mut out: HashMap<u128, (u64, String)> = HashMap::new();
        let mut buf = BytesMut::new();
        for row in &rows {
            buf.clear();
            for i in 0..n {
                let Raw(field) = row.try_get::<_, Raw<'_>>(i).map_err(reading)?;
                put_field(&mut buf, field);
            }
            let text = (n..2 * n)
                .map(|i| row.try_get::<_, String>(i))
                .collect::<Result<Vec<_>, _>>()
                .map_err(reading)?;
            let e = out
                .entry(xxhash_rust::xxh3::xxh3_128(&buf))
                .or_insert_with(|| (0, row_text(&names, text.into_iter())));
            e.0 += 1;
        }
        tx.commit()
            .map_err(Error::db(table, "ending the read-only transaction"))?;
        Ok(out)
    }

    /// The `tid` values (as Postgres prints them) of rows no period has.
    fn extra_values(&self, client: &mut Client, db: &DbDigests) -> Result<Vec<String>, Error> {
        let ty = &self.conv.columns[self.conv.tid].pg_type;
        let mut out = BTreeSet::new();
        for key in db.extra.keys() {
            let row = client
                .query_one(&format!("SELECT ($1::{ty})::text"), &[&RawParam(key)])
                .map_err(Error::db(self.ctx.table, "printing a tid value"))?;
            out.insert(
                row.get::<_, Option<String>>(0)
                    .unwrap_or_else(|| "NULL".into()),
            );
        }
        Ok(out.into_iter().collect())
    }
}

/// Which rows of the fact table a database digest reads.
#[derive(Clone, Copy)]
enum Scope<'s> {
    /// All of them.
    All,
    /// Those of the periods at these positions.
    Periods(&'s [usize]),
    /// Those of no period.
    NoPeriod,
}

/// A read-only transaction with one snapshot for all its statements.
fn snapshot<'c>(
    client: &'c mut Client,
    table: &TableId,
) -> Result<postgres::Transaction<'c>, Error> {
    client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(Error::db(table, "begin"))
}

/// `column=value, …`.
fn row_text(names: &[&str], values: impl Iterator<Item = String>) -> String {
    names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A parameter sent as these raw binary bytes, whatever its type.
#[derive(Debug)]
struct RawParam<'a>(&'a [u8]);

impl ToSql for RawParam<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.put_slice(self.0);
        Ok(IsNull::No)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    postgres_types::to_sql_checked!();
}

/// Repairs what `r` found in `table`, through the apply's own paths.
fn repair(
    client: &mut Client,
    store: &PartitionStore,
    table: &TableId,
    opts: &ApplyOptions,
    r: &mut TableReconcile,
) {
    let mut changed: Vec<Tid> = r.missing_in_db.clone();
    changed.extend(r.differs.iter().map(|d| d.tid.clone()));
    let mut work = TableWork::new(table.clone(), changed, Vec::new());
    work.extra_values = r.extra_in_db.clone();
    let apply = ApplyOptions {
        // A table that has partitions and no fact table is created.
        create_missing: true,
        ..opts.clone()
    };
    let result = apply_table(client, store, &work, &apply);
    match result.status {
        ApplyStatus::Applied if !opts.dry_run => r.status = ReconcileStatus::Repaired,
        ApplyStatus::Applied => {}
        _ => {
            r.status = ReconcileStatus::Failed;
            r.error = Some(shorten_error(format!(
                "table {table}: the repair failed: {}",
                result
                    .error
                    .as_deref()
                    .or(result.reason.as_deref())
                    .unwrap_or("unknown error")
            )));
        }
    }
    r.repair = Some(result);
}

/// One binary COPY field, as the COPY sends it: its length, then its
/// bytes; `-1` for NULL.
fn put_field(buf: &mut BytesMut, field: Option<&[u8]>) {
    match field {
        Some(b) => {
            buf.put_i32(i32::try_from(b.len()).unwrap_or(i32::MAX));
            buf.put_slice(b);
        }
        None => buf.put_i32(-1),
    }
}

/// A converted row as its binary COPY fields (what the apply sends).
fn encode_cells(cells: &[Cell<'_>], types: &[Type], buf: &mut BytesMut) {
    buf.clear();
    let mut field = BytesMut::new();
    for (c, ty) in cells.iter().zip(types) {
        field.clear();
        match c.to_sql(ty, &mut field) {
            Ok(IsNull::No) => put_field(buf, Some(&field)),
            _ => put_field(buf, None),
        }
    }
}

/// A field's raw binary value, whatever its type.
struct Raw<'a>(Option<&'a [u8]>);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(
        _ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw)))
    }

    fn from_sql_null(_ty: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }
}
