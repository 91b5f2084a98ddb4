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
//! snapshot (a read-only transaction that blocks no reader), over
//! [`ReconcileOptions::read_connection`] when given. Only the
//! periods whose digests differ are then read again, on both sides, in a
//! fresh snapshot: a period that agrees then (an apply committed in
//! between) is not reported. For those that still differ the rows of each
//! side that the other lacks are counted and shown. Each period is
//! digested in up to 1024 buckets by hash (within a budget a table), and
//! by value of one code column ([`crate::narrow`]): when the differing
//! values narrow the damage to few rows, only those are read again
//! (through the table's indexes); else the rows of the buckets that differ
//! are. Either way each row is read once a side and counted by hash, in
//! memory while the hashes are few and spilled to temporary files by hash
//! when they are not ([`crate::tally`]), so that memory stays flat
//! whatever the size of a table, a period or its damage.
//!
//! The repair applies exactly the periods found through the apply's own
//! paths, in one transaction per table: missing and differing periods are
//! re-loaded (delete and insert, or a partition swap), values no period
//! has are deleted, a missing table is created; every other period's rows
//! are left as they are.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use partition_store::PartitionStore;
use postgres::Client;
use postgres_types::{IsNull, ToSql, Type};
use sync_state::{
    shorten_error, ApplyStatus, DataDir, Examples, PeriodDifference, ReconcileReport,
    ReconcileStatus, ReconcileSummary, RunId, TableId, TableReconcile, Tid, UtcSecond,
    EXAMPLE_ROWS,
};

use crate::catalog::{quote_ident, table_columns, table_oid};
use crate::conversion::{stream_partition_in_batches, Conversion};
use crate::convert::Cell;
use crate::copy_out;
use crate::error::error_chain;
use crate::narrow::{field, key_value, Narrowing, ValueDigests, MAX_VALUES, NARROW_ROWS};
use crate::tally::{Counter, HeldRows, Side, Tally};
use crate::tx::{check_partitions, tid_values, Ctx};
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
    /// A connection of its own for the tables' whole-table reads, made at
    /// the first table and kept for the others (made again after a table
    /// whose read failed): the same server, database and user as the
    /// client (no TLS). Its COPY is
    /// streamed by one asynchronous task, where the blocking client enters
    /// its runtime once per row (the most CPU a reconcile spends outside
    /// hashing). Rechecks and repairs still use the client. `None`: the
    /// client reads everything.
    pub read_connection: Option<tokio_postgres::Config>,
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
    // One connection for the whole-table reads of every table.
    let mut reader = opts.read_connection.clone().map(ReadConnection::new);
    for table in tables {
        let mut r = compare_table(client, &mut reader, &store, &table, opts);
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
    opts: &ReconcileOptions,
) -> TableReconcile {
    let mut reader = opts.read_connection.clone().map(ReadConnection::new);
    compare_table(client, &mut reader, store, table, opts)
}

/// [`reconcile_table`] with the whole-table read over `reader` when there
/// is one (else over `client`).
fn compare_table(
    client: &mut Client,
    reader: &mut Option<ReadConnection>,
    store: &PartitionStore,
    table: &TableId,
    opts: &ReconcileOptions,
) -> TableReconcile {
    let t0 = Instant::now();
    let mut r = match compare(client, reader, store, table, opts) {
        Ok(r) => r,
        Err(e) => TableReconcile::failed(error_chain(&e)),
    };
    r.duration_seconds = t0.elapsed().as_secs_f64();
    r
}

fn compare(
    client: &mut Client,
    reader: &mut Option<ReadConnection>,
    store: &PartitionStore,
    table: &TableId,
    ropts: &ReconcileOptions,
) -> Result<TableReconcile, Error> {
    let opts = &ropts.apply;
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
    let checked = check_partitions(store, table, &ctx.target, &columns, &tids)?;
    let side = Sides::new(&ctx, &checked.conversion, &tids, &checked.rows)?;
    // The whole table: the mirror on a thread of its own while the
    // database streams, in one snapshot.
    let t = Instant::now();
    let (mirror, db) = std::thread::scope(|scope| {
        let mirror = scope.spawn(|| {
            let t = Instant::now();
            let digests = side.mirror();
            tracing::debug!(table = %table, secs = t.elapsed().as_secs_f64(), "digests of the mirror");
            digests
        });
        let db = match reader {
            Some(reader) => reader.digests(&side),
            None => side.database(client, Scope::All),
        };
        let mirror = mirror
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (mirror, db)
    });
    let (mirror, db) = (mirror?, db?);
    tracing::debug!(table = %table, secs = t.elapsed().as_secs_f64(), "digests of both sides");
    let mut r = TableReconcile::agrees();
    r.rows_compared = mirror.rows() + db.rows();
    let suspects: Vec<usize> = (0..tids.len())
        .filter(|&p| mirror.periods[p] != db.side.periods[p])
        .collect();
    if suspects.is_empty() && db.extra.is_empty() {
        return Ok(r);
    }
    sync_state::crash::point("reconcile: compared, before the recheck");
    // The suspects' differing buckets again, each period in a fresh
    // snapshot: what agrees now was an apply committing in between.
    let digests = Compared::new(&mirror, &db.side);
    for p in suspects {
        side.recheck(client, p, &digests, &mut r)?;
    }
    if !db.extra.is_empty() {
        let again = side.database(client, Scope::NoPeriod)?;
        r.extra_in_db = side.extra_values(client, &again)?;
    }
    if r.has_differences() {
        r.status = ReconcileStatus::Differs;
    }
    Ok(r)
}

/// The connection of [`ReconcileOptions::read_connection`] and the runtime
/// its one task runs on, made at the first table and kept for the next
/// (a connection costs the server a process: milliseconds a table).
struct ReadConnection {
    config: tokio_postgres::Config,
    runtime: Option<tokio::runtime::Runtime>,
    client: Option<tokio_postgres::Client>,
}

impl ReadConnection {
    fn new(config: tokio_postgres::Config) -> ReadConnection {
        ReadConnection {
            config,
            runtime: None,
            client: None,
        }
    }

    /// The database's digests of `side`'s whole table. After a failure
    /// the connection is dropped (its transaction may still be open), and
    /// the next table connects again.
    fn digests(&mut self, side: &Sides<'_>) -> Result<DbDigests, Error> {
        let table = side.ctx.table;
        let runtime = match self.runtime.take() {
            Some(r) => r,
            None => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| Error::CopyOut {
                    table: table.clone(),
                    source,
                })?,
        };
        let (config, slot) = (&self.config, &mut self.client);
        let out = runtime.block_on(async {
            let client = match slot.take() {
                Some(c) => c,
                None => {
                    let (client, connection) = config
                        .connect(tokio_postgres::NoTls)
                        .await
                        .map_err(Error::db(table, "connecting for the whole-table read"))?;
                    // The connection ends with its client; its outcome
                    // adds nothing.
                    tokio::spawn(connection);
                    client
                }
            };
            let out = side.stream_database(&client).await;
            if out.is_ok() {
                *slot = Some(client);
            }
            out
        });
        self.runtime = Some(runtime);
        out
    }
}

/// An order-independent digest of a multiset of rows: their count and the
/// wrapping sums of the two halves of their hashes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Digest {
    pub(crate) rows: u64,
    lo: u64,
    hi: u64,
}

impl Digest {
    /// The digest of the rows of all of `parts`.
    fn total(parts: &[Digest]) -> Digest {
        parts.iter().fold(Digest::default(), |mut t, d| {
            t.rows += d.rows;
            t.lo = t.lo.wrapping_add(d.lo);
            t.hi = t.hi.wrapping_add(d.hi);
            t
        })
    }

    /// The digest of the rows of `self` less those of `other` (as
    /// multisets; wrapping, so that a difference compares exactly).
    fn minus(&self, other: &Digest) -> Digest {
        Digest {
            rows: self.rows.wrapping_sub(other.rows),
            lo: self.lo.wrapping_sub(other.lo),
            hi: self.hi.wrapping_sub(other.hi),
        }
    }

    pub(crate) fn add(&mut self, h: u128) {
        self.rows += 1;
        self.lo = self.lo.wrapping_add(h as u64);
        self.hi = self.hi.wrapping_add((h >> 64) as u64);
    }
}

/// A period's digests, one per hash bucket ([`bucket`]).
type Buckets = Vec<Digest>;

/// One side's digests of a table: each period's by hash bucket, and the
/// table's by value of the narrowing column ([`crate::narrow`]) when
/// there is one.
struct SideDigests {
    periods: Vec<Buckets>,
    values: Option<ValueDigests>,
}

impl SideDigests {
    fn rows(&self) -> u64 {
        self.periods.iter().map(|b| Digest::total(b).rows).sum()
    }
}

/// Both sides' digests of a table, and what they tell of every differing
/// period alike: the values that narrow them, the tables' rows.
struct Compared<'d> {
    mine: &'d SideDigests,
    theirs: &'d SideDigests,
    narrowing: Option<Narrowing>,
    /// The rows of each side's table (of the mirror's periods).
    rows: (u64, u64),
}

impl<'d> Compared<'d> {
    fn new(mine: &'d SideDigests, theirs: &'d SideDigests) -> Compared<'d> {
        let narrowing = match (&mine.values, &theirs.values) {
            (Some(m), Some(d)) => Narrowing::of(m, d),
            _ => None,
        };
        Compared {
            mine,
            theirs,
            narrowing,
            rows: (mine.rows(), theirs.rows()),
        }
    }
}

/// The database's digests: those of the mirror's periods (by position),
/// and one digest per `tid` value no period maps to (by its binary
/// value).
struct DbDigests {
    side: SideDigests,
    extra: HashMap<Vec<u8>, Digest>,
}

impl DbDigests {
    fn rows(&self) -> u64 {
        self.side.rows() + self.extra.values().map(|d| d.rows).sum::<u64>()
    }
}

/// The database's digests as its rows arrive, each added to its period's
/// (or, of a `tid` no period maps to, to that value's).
struct DbAccumulator<'s> {
    side: &'s Sides<'s>,
    out: DbDigests,
    /// The last row's `tid` and period: rows come clustered by period.
    last: Option<(Vec<u8>, usize)>,
}

impl<'s> DbAccumulator<'s> {
    fn new(side: &'s Sides<'s>) -> DbAccumulator<'s> {
        DbAccumulator {
            side,
            out: DbDigests {
                side: side.empty(),
                extra: HashMap::new(),
            },
            last: None,
        }
    }

    /// Adds the row `t` of hash `h`.
    fn add(&mut self, h: u128, t: &copy_out::Tuple<'_>) {
        let side = self.side;
        let tid = t.value(side.conv.tid).unwrap_or_default();
        let period = match &self.last {
            Some((k, p)) if k.as_slice() == tid => Some(*p),
            _ => {
                let p = side.keys.get(tid).copied();
                if let Some(p) = p {
                    self.last = Some((tid.to_vec(), p));
                }
                p
            }
        };
        match period {
            Some(p) => {
                let digests = &mut self.out.side;
                let buckets = &mut digests.periods[p];
                let n = buckets.len();
                buckets[bucket(h, n)].add(h);
                if let Some(values) = &mut digests.values {
                    values.add(t.fields, h);
                }
            }
            None => self.out.extra.entry(tid.to_vec()).or_default().add(h),
        }
    }
}

/// A row as its binary fields (`None`: NULL), kept to be shown.
type RawRow = Vec<Option<Vec<u8>>>;

/// What the row-level diff of one period found.
#[derive(Default)]
struct Found {
    /// The digests of the rows it read, by the period's buckets: the
    /// mirror's and the database's.
    read: [Buckets; 2],
    only_in_mirror: u64,
    only_in_db: u64,
    /// Rows only the mirror has, by hash (the smallest hashes).
    ex_mirror: BTreeMap<u128, RawRow>,
    /// Rows only the database has, by hash (the smallest hashes).
    ex_db: BTreeMap<u128, RawRow>,
}

impl Found {
    fn is_empty(&self) -> bool {
        self.only_in_mirror == 0 && self.only_in_db == 0
    }

    /// Whether the rows this diff read hold every difference between the
    /// period's digests `mine` and `theirs`: in each bucket the two sides
    /// differ by exactly what the rows read differ by, so the rows it did
    /// not read are the same on both sides.
    fn explains(&self, mine: &Buckets, theirs: &Buckets) -> bool {
        let [a, b] = &self.read;
        mine.len() == a.len()
            && mine
                .iter()
                .zip(theirs)
                .zip(a.iter().zip(b))
                .all(|((m, t), (a, b))| m.minus(t) == a.minus(b))
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
    /// Each period's number of hash buckets ([`buckets_for`]).
    buckets: Vec<usize>,
    /// The column the value digests narrow by, by position.
    code: Option<usize>,
}

impl<'a> Sides<'a> {
    fn new(
        ctx: &'a Ctx<'a>,
        conv: &'a Conversion,
        tids: &'a [Tid],
        rows: &[u64],
    ) -> Result<Sides<'a>, Error> {
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
            buckets: {
                let table_rows = rows.iter().sum();
                rows.iter().map(|&r| buckets_for(r, table_rows)).collect()
            },
            code: narrowing_column(ctx, conv),
        })
    }

    /// Empty digests of every period.
    fn empty(&self) -> SideDigests {
        SideDigests {
            periods: self
                .buckets
                .iter()
                .map(|&n| vec![Digest::default(); n])
                .collect(),
            values: self.code.map(ValueDigests::new),
        }
    }

    /// The mirror's digests of every period.
    fn mirror(&self) -> Result<SideDigests, Error> {
        let mut out = self.empty();
        for p in 0..self.tids.len() {
            let buckets = &mut out.periods[p];
            let values = &mut out.values;
            let n = buckets.len();
            self.each_mirror_row(p, |h, fields| {
                buckets[bucket(h, n)].add(h);
                if let Some(values) = values.as_mut() {
                    values.add(fields, h);
                }
            })?;
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
            Scope::Period(p) => format!(
                " WHERE {tid_col} = {}",
                self.typed_literals([p].into_iter())
            ),
            Scope::Narrowed(p, predicate) => format!(
                " WHERE {tid_col} = {} AND {predicate}",
                self.typed_literals([p].into_iter())
            ),
        }
    }

    /// The database's digests of the rows in `scope`, in one read-only
    /// snapshot.
    fn database(&self, client: &mut Client, scope: Scope<'_>) -> Result<DbDigests, Error> {
        let mut tx = snapshot(client, self.ctx.table)?;
        let mut acc = DbAccumulator::new(self);
        self.each_db_row(&mut tx, scope, |h, t| acc.add(h, t))?;
        end(tx, self.ctx.table)?;
        Ok(acc.out)
    }

    /// The database's digests of the whole table over `client` (a
    /// connection of its own), in one read-only snapshot: one task streams
    /// the COPY, a chunk at a time.
    async fn stream_database(&self, client: &tokio_postgres::Client) -> Result<DbDigests, Error> {
        use futures_util::StreamExt;
        let table = self.ctx.table;
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(Error::db(table, "begin"))?;
        let stream = client
            .copy_out(&self.copy_sql(Scope::All))
            .await
            .map_err(Error::db(table, "reading the fact table"))?;
        let mut stream = std::pin::pin!(stream);
        let mut acc = DbAccumulator::new(self);
        let mut tuples = copy_out::Tuples::new(self.types.len());
        let mut add = |t: &copy_out::Tuple<'_>| acc.add(row_hash(t.fields), t);
        let copy_err = |source| Error::CopyOut {
            table: table.clone(),
            source,
        };
        let mut ended = false;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(Error::db(table, "reading the fact table"))?;
            ended = tuples.push(&chunk, &mut add).map_err(copy_err)?;
        }
        if !ended {
            return Err(copy_err(tuples.unterminated()));
        }
        client
            .batch_execute("COMMIT")
            .await
            .map_err(Error::db(table, "ending the read-only transaction"))?;
        Ok(acc.out)
    }

    /// The binary COPY of the rows of `scope`.
    fn copy_sql(&self, scope: Scope<'_>) -> String {
        format!(
            "COPY (SELECT {} FROM {}{}) TO STDOUT (FORMAT binary)",
            self.select_list(),
            self.ctx.target,
            self.filter(scope)
        )
    }

    /// Streams the rows of `scope` of the fact table (`COPY … TO STDOUT
    /// (FORMAT binary)`): each row's hash (of its binary fields, as the
    /// mirror's rows are hashed) and the row.
    fn each_db_row(
        &self,
        tx: &mut postgres::Transaction<'_>,
        scope: Scope<'_>,
        mut f: impl FnMut(u128, &copy_out::Tuple<'_>),
    ) -> Result<(), Error> {
        let table = self.ctx.table;
        let n = self.types.len();
        let sql = self.copy_sql(scope);
        let reader = tx
            .copy_out(&sql)
            .map_err(Error::db(table, "reading the fact table"))?;
        copy_out::each_tuple(reader, n, |t| f(row_hash(t.fields), t)).map_err(|source| {
            Error::CopyOut {
                table: table.clone(),
                source,
            }
        })?;
        Ok(())
    }

    /// Streams the rows of period `p` of the mirror, converted as the apply
    /// converts them: each row's hash and its binary COPY fields.
    fn each_mirror_row(&self, p: usize, mut f: impl FnMut(u128, &[u8])) -> Result<(), Error> {
        let mut buf = BytesMut::new();
        let mut sink = |cells: &[Cell<'_>]| {
            encode_cells(cells, &self.types, &mut buf);
            f(row_hash(&buf), &buf);
            Ok(())
        };
        stream_partition_in_batches(
            self.ctx.store,
            self.ctx.table,
            &self.tids[p],
            self.conv,
            MIRROR_BATCH_ROWS,
            &mut sink,
        )?;
        Ok(())
    }

    /// The column names, for rows shown as text.
    fn names(&self) -> Vec<&str> {
        self.conv.columns.iter().map(|c| c.name.as_str()).collect()
    }

    /// Reads the rows of period `p` that can differ again, on both sides,
    /// in a fresh snapshot, and records what still differs: the period
    /// missing from the database, or its rows that only one side has.
    /// Those rows are the ones the value digests narrow to
    /// ([`Narrowing`]), read through the table's indexes, when that is
    /// few; else those of the differing hash buckets. A narrowed read is
    /// trusted only when the rows it read account for the whole of the
    /// period's difference, bucket by bucket ([`Found::explains`]); else
    /// (an apply committed since, damage the values did not tell, or a
    /// value the server's predicate matched otherwise than the bytes do)
    /// the buckets decide, so that nothing the digests saw is dismissed or
    /// misnamed on the values' word.
    fn recheck(
        &self,
        client: &mut Client,
        p: usize,
        digests: &Compared<'_>,
        r: &mut TableReconcile,
    ) -> Result<(), Error> {
        let t = Instant::now();
        let mut tx = snapshot(client, self.ctx.table)?;
        let (mine_p, theirs_p) = (&digests.mine.periods[p], &digests.theirs.periods[p]);
        let found = self.diff_by_value(&mut tx, p, digests)?;
        let how = if found.is_some() {
            "by value"
        } else {
            "by bucket"
        };
        let found = match found {
            Some(f) => f,
            None => self.diff_by_bucket(&mut tx, p, mine_p, theirs_p)?,
        };
        let only_in_mirror = self.render(&mut tx, &found.ex_mirror)?;
        let only_in_db = self.render(&mut tx, &found.ex_db)?;
        end(tx, self.ctx.table)?;
        tracing::debug!(table = %self.ctx.table, tid = %self.tids[p], how, secs = t.elapsed().as_secs_f64(), "row-level diff");
        if found.is_empty() {
            return Ok(());
        }
        // The database's rows: the mirror's, less those only the mirror
        // has, and those only the database has.
        let mirror_rows = Digest::total(mine_p).rows;
        let db_rows = (mirror_rows + found.only_in_db).saturating_sub(found.only_in_mirror);
        if db_rows == 0 {
            r.missing_in_db.push(self.tids[p].clone());
            return Ok(());
        }
        let mut examples = Examples {
            only_in_mirror,
            only_in_db,
        };
        examples.only_in_mirror.sort();
        examples.only_in_db.sort();
        r.differs.push(PeriodDifference {
            tid: self.tids[p].clone(),
            mirror_rows,
            db_rows,
            only_in_mirror: found.only_in_mirror,
            only_in_db: found.only_in_db,
            examples,
        });
        Ok(())
    }

    /// The row-level diff of the rows of period `p` that hold the table's
    /// differing values, when there are few and they account for the
    /// period's whole difference ([`Found::explains`]); `None` when the
    /// period is to be read by bucket.
    fn diff_by_value(
        &self,
        tx: &mut postgres::Transaction<'_>,
        p: usize,
        digests: &Compared<'_>,
    ) -> Result<Option<Found>, Error> {
        let Some(n) = &digests.narrowing else {
            return Ok(None);
        };
        let (mine, theirs) = (&digests.mine.periods[p], &digests.theirs.periods[p]);
        let period = (Digest::total(mine).rows, Digest::total(theirs).rows);
        let rows = n.expected_rows(period, digests.rows);
        if rows > NARROW_ROWS {
            return Ok(None);
        }
        let predicate = self.predicate(tx, n)?;
        let scope = Scope::Narrowed(p, &predicate);
        let f = self.diff(tx, p, &Subset::Values(n), scope, rows)?;
        Ok(f.explains(mine, theirs).then_some(f))
    }

    /// The row-level diff of the rows of period `p` in the buckets whose
    /// digests differ (`mine`, `theirs`).
    fn diff_by_bucket(
        &self,
        tx: &mut postgres::Transaction<'_>,
        p: usize,
        mine: &Buckets,
        theirs: &Buckets,
    ) -> Result<Found, Error> {
        let pairs = || mine.iter().zip(theirs);
        let differing: Vec<bool> = pairs().map(|(a, b)| a != b).collect();
        let rows = pairs()
            .filter(|(a, b)| a != b)
            .map(|(a, b)| a.rows + b.rows)
            .sum();
        self.diff(tx, p, &Subset::Buckets(&differing), Scope::Period(p), rows)
    }

    /// The SQL condition of a narrowing: `col IN (v, …)`, the values as
    /// Postgres prints them (one round trip), `OR col IS NULL` for a NULL.
    fn predicate(
        &self,
        tx: &mut postgres::Transaction<'_>,
        n: &Narrowing,
    ) -> Result<String, Error> {
        let mut keys: Vec<&Vec<u8>> = n.keys.iter().collect();
        keys.sort();
        let ty = self.compared_type(n.col);
        let values: Vec<&[u8]> = keys.iter().filter_map(|k| key_value(k)).collect();
        let mut alts = Vec::new();
        if !values.is_empty() {
            let casts: Vec<String> = (1..=values.len())
                .map(|i| format!("(${i}::{ty})::text"))
                .collect();
            let params: Vec<RawParam<'_>> = values.iter().map(|v| RawParam(Some(v))).collect();
            let refs: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            let step = "printing the differing values";
            let row = tx
                .query_one(&format!("SELECT {}", casts.join(", ")), &refs)
                .map_err(Error::db(self.ctx.table, step))?;
            let literals = (0..values.len())
                .map(|i| {
                    let v: String = row.try_get(i).map_err(Error::db(self.ctx.table, step))?;
                    let v = v.replace('\\', "\\\\").replace('\'', "''");
                    Ok(format!("E'{v}'::{ty}"))
                })
                .collect::<Result<Vec<_>, Error>>()?;
            alts.push(format!(
                "{} IN ({})",
                self.compared_column(n.col),
                literals.join(", ")
            ));
        }
        if values.len() < keys.len() {
            alts.push(format!("{} IS NULL", self.compared_column(n.col)));
        }
        Ok(format!("({})", alts.join(" OR ")))
    }

    /// Column `c` as the comparison reads it ([`Self::select_list`]).
    fn compared_column(&self, c: usize) -> String {
        let col = &self.conv.columns[c];
        if col.ty == Type::BPCHAR {
            format!("{}::text", quote_ident(&col.name))
        } else {
            quote_ident(&col.name)
        }
    }

    /// The type of column `c` as the comparison reads it.
    fn compared_type(&self, c: usize) -> &str {
        let col = &self.conv.columns[c];
        if col.ty == Type::BPCHAR {
            "text"
        } else {
            col.pg_type.as_str()
        }
    }

    /// The row-level diff of period `p`: the rows `subset` holds (about
    /// `rows` of both sides) counted by hash on both sides, the mirror's
    /// first (so that while the count is in memory a database row is
    /// known to be surplus as it is read; the database's rows of `scope`),
    /// then the smallest surplus rows of each side as examples (the
    /// mirror's held while they are few, else read again; both shown as
    /// Postgres prints them).
    fn diff(
        &self,
        tx: &mut postgres::Transaction<'_>,
        p: usize,
        subset: &Subset<'_>,
        scope: Scope<'_>,
        rows: u64,
    ) -> Result<Found, Error> {
        let n = self.buckets[p];
        let fields = self.types.len();
        let mut counter = Counter::new(rows);
        let mut held = HeldRows::for_rows(rows);
        let [mut read_m, mut read_d] = [vec![Digest::default(); n], vec![Digest::default(); n]];
        on_a_thread(|| {
            self.each_mirror_row(p, |h, row| {
                if subset.holds(h, n, row) {
                    read_m[bucket(h, n)].add(h);
                    counter.add(h, Side::Mirror);
                    held.push(h, row);
                }
            })
        })?;
        let mut ex_db = BTreeMap::new();
        self.each_db_row(tx, scope, |h, t| {
            if subset.holds(h, n, t.fields) {
                read_d[bucket(h, n)].add(h);
                counter.add(h, Side::Db);
                if counter.in_memory(h).is_some_and(|c| c.db > c.mirror) {
                    keep_example(&mut ex_db, h, || raw_row(t, fields));
                }
            }
        })?;
        let spilled = counter.spilled();
        let tally = counter.finish().map_err(|source| Error::Spill {
            table: self.ctx.table.clone(),
            tid: self.tids[p].clone(),
            source,
        })?;
        if spilled {
            // Rows kept while reading missed those counted on disk.
            ex_db = self.db_examples(tx, scope, &tally)?;
        }
        let ex_mirror = match held.find(&tally.ex_mirror) {
            Some(rows) => rows,
            None => self.mirror_examples(p, &tally)?,
        };
        Ok(Found {
            read: [read_m, read_d],
            only_in_mirror: tally.only_in_mirror,
            only_in_db: tally.only_in_db,
            ex_mirror: ex_mirror
                .into_iter()
                .map(|(h, row)| (h, raw_fields(&row, fields)))
                .collect(),
            ex_db,
        })
    }

    /// The binary fields of `tally`'s mirror examples, read again.
    fn mirror_examples(&self, p: usize, tally: &Tally) -> Result<BTreeMap<u128, Vec<u8>>, Error> {
        let wanted = &tally.ex_mirror;
        let mut out = BTreeMap::new();
        if wanted.is_empty() {
            return Ok(out);
        }
        on_a_thread(|| {
            self.each_mirror_row(p, |h, row| {
                if wanted.contains(&h) {
                    out.entry(h).or_insert_with(|| row.to_vec());
                }
            })
        })?;
        Ok(out)
    }

    /// The rows of `tally`'s database examples, read again from `scope`.
    fn db_examples(
        &self,
        tx: &mut postgres::Transaction<'_>,
        scope: Scope<'_>,
        tally: &Tally,
    ) -> Result<BTreeMap<u128, RawRow>, Error> {
        let wanted = &tally.ex_db;
        let mut out = BTreeMap::new();
        if wanted.is_empty() {
            return Ok(out);
        }
        let fields = self.types.len();
        self.each_db_row(tx, scope, |h, t| {
            if wanted.contains(&h) {
                out.entry(h).or_insert_with(|| raw_row(t, fields));
            }
        })?;
        Ok(out)
    }

    /// Rows (either side's) as text, as Postgres prints their values.
    fn render(
        &self,
        tx: &mut postgres::Transaction<'_>,
        rows: &BTreeMap<u128, RawRow>,
    ) -> Result<Vec<String>, Error> {
        let table = self.ctx.table;
        let casts: Vec<String> = self
            .conv
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let ty = if c.ty == Type::BPCHAR {
                    "text"
                } else {
                    c.pg_type.as_str()
                };
                format!("(${}::{ty})::text", i + 1)
            })
            .collect();
        let sql = format!("SELECT {}", casts.join(", "));
        let names = self.names();
        let mut out = Vec::with_capacity(rows.len());
        for fields in rows.values() {
            let params: Vec<RawParam<'_>> = fields.iter().map(|f| RawParam(f.as_deref())).collect();
            let refs: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            let row = tx
                .query_one(&sql, &refs)
                .map_err(Error::db(table, "printing a row"))?;
            let values = (0..fields.len())
                .map(|i| row.try_get::<_, Option<String>>(i))
                .collect::<Result<Vec<_>, _>>()
                .map_err(Error::db(table, "printing a row"))?;
            out.push(row_text(
                &names,
                values
                    .into_iter()
                    .map(|v| v.unwrap_or_else(|| "NULL".into())),
            ));
        }
        Ok(out)
    }

    /// `'v1'::type, 'v2'::type, …` of the periods at `ix`.
    fn typed_literals(&self, ix: impl Iterator<Item = usize>) -> String {
        let ty = &self.conv.columns[self.conv.tid].pg_type;
        ix.map(|i| format!("{}::{ty}", self.literals[i]))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The `tid` values (as Postgres prints them) of rows no period has.
    fn extra_values(&self, client: &mut Client, db: &DbDigests) -> Result<Vec<String>, Error> {
        let ty = &self.conv.columns[self.conv.tid].pg_type;
        let mut out = BTreeSet::new();
        for key in db.extra.keys() {
            let row = client
                .query_one(&format!("SELECT ($1::{ty})::text"), &[&RawParam(Some(key))])
                .map_err(Error::db(self.ctx.table, "printing a tid value"))?;
            out.insert(
                row.get::<_, Option<String>>(0)
                    .unwrap_or_else(|| "NULL".into()),
            );
        }
        Ok(out.into_iter().collect())
    }
}

/// The column the value digests narrow by ([`crate::narrow`]): the code
/// column with the most values, of at most [`MAX_VALUES`], in the cached
/// tableinfo (`None` without one: differing periods are then read by
/// bucket).
fn narrowing_column(ctx: &Ctx<'_>, conv: &Conversion) -> Option<usize> {
    let info = sync_state::tableinfo::cached_tableinfo(ctx.store.data_dir(), ctx.table)
        .ok()
        .flatten()?;
    info.variables
        .iter()
        .filter_map(|v| {
            let name = sync_state::column_name(&v.id);
            let c = conv.columns.iter().position(|c| c.name == name)?;
            let narrows = c != conv.tid && Some(c) != conv.indhold && v.values.len() <= MAX_VALUES;
            narrows.then_some((v.values.len(), c))
        })
        .max_by_key(|&(n, c)| (n, std::cmp::Reverse(c)))
        .map(|(_, c)| c)
}

/// Which rows of the fact table a database digest reads.
#[derive(Clone, Copy)]
enum Scope<'a> {
    /// All of them.
    All,
    /// Those of the period at this position.
    Period(usize),
    /// Those of the period at this position that meet a condition.
    Narrowed(usize, &'a str),
    /// Those of no period.
    NoPeriod,
}

/// The rows of a period the row-level diff compares.
enum Subset<'a> {
    /// Those of the hash buckets marked (by bucket).
    Buckets(&'a [bool]),
    /// Those a narrowing holds.
    Values(&'a Narrowing),
}

impl Subset<'_> {
    /// Whether the row of hash `h` and binary fields `fields` is in the
    /// subset (`n`: the period's buckets).
    fn holds(&self, h: u128, n: usize, fields: &[u8]) -> bool {
        match self {
            Subset::Buckets(mask) => mask.get(bucket(h, n)).copied().unwrap_or(false),
            Subset::Values(narrowing) => narrowing.holds(fields),
        }
    }
}

/// Rows per hash bucket a period's digests aim at: a period's buckets
/// cost 24 bytes each on each side, and one edited row sends one bucket
/// (about this many rows a side) to the row-level diff's count when
/// nothing narrows it (the period is read again either way; counting a
/// few thousand hashes costs less than holding more buckets).
const ROWS_PER_BUCKET: u64 = 4096;

/// At most this many buckets a period.
const MAX_BUCKETS: usize = 1024;

/// Buckets a table's periods share, on each side (a period's share is
/// rounded down to a power of two, and it has at least one): 96 KiB a
/// side whatever the table's size, and 24 bytes a period; a larger table
/// has more rows a bucket.
const TABLE_BUCKETS: u64 = 4096;

/// Rows a batch of the mirror's partitions as the reconcile reads them:
/// half the apply's ([`partition_store::READ_BATCH_ROWS`]). The mirror's
/// side runs beside the database's read, which takes longer, so smaller
/// batches cost no time, and they hold the reconcile, which keeps the
/// database's stream and both sides' digests too, within the apply's
/// memory.
const MIRROR_BATCH_ROWS: usize = 8 * 1024;

/// A row's hash: of its fields as a binary COPY sends them (both sides
/// encode the mirror's rows to that form first).
pub(crate) fn row_hash(fields: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(fields)
}

/// The buckets of a period of `rows` rows in a table of `table_rows`: a
/// power of two.
fn buckets_for(rows: u64, table_rows: u64) -> usize {
    let per_bucket = ROWS_PER_BUCKET.max(table_rows.div_ceil(TABLE_BUCKETS));
    let want = usize::try_from(rows / per_bucket)
        .unwrap_or(MAX_BUCKETS)
        .clamp(1, MAX_BUCKETS);
    // The largest power of two not above it.
    1 << want.ilog2()
}

/// The bucket of a row's hash among `n` (a power of two): its top bits.
fn bucket(h: u128, n: usize) -> usize {
    ((h >> 64) as usize) & (n - 1)
}

/// Keeps `make()` for `h` if `h` is among the [`EXAMPLE_ROWS`] smallest
/// hashes kept: the rows shown do not depend on the order rows are read.
fn keep_example<V>(kept: &mut BTreeMap<u128, V>, h: u128, make: impl FnOnce() -> V) {
    if kept.contains_key(&h)
        || (kept.len() >= EXAMPLE_ROWS && kept.last_key_value().is_some_and(|(k, _)| *k < h))
    {
        return;
    }
    kept.insert(h, make());
    if kept.len() > EXAMPLE_ROWS {
        kept.pop_last();
    }
}

/// A database row's binary fields, kept to be shown.
fn raw_row(t: &copy_out::Tuple<'_>, fields: usize) -> RawRow {
    (0..fields)
        .map(|i| t.value(i).map(<[u8]>::to_vec))
        .collect()
}

/// A mirror row's binary COPY fields, split as a database row's.
fn raw_fields(row: &[u8], fields: usize) -> RawRow {
    (0..fields)
        .map(|i| field(row, i).and_then(key_value).map(<[u8]>::to_vec))
        .collect()
}

/// Runs `f` on a thread of its own, as the first pass reads the mirror:
/// the partitions' read buffers then reuse that thread's memory instead of
/// adding to the database side's (peak memory stays that of the first
/// pass).
fn on_a_thread<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(f)
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Ends a read-only snapshot.
fn end(tx: postgres::Transaction<'_>, table: &TableId) -> Result<(), Error> {
    tx.commit()
        .map_err(Error::db(table, "ending the read-only transaction"))
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
struct RawParam<'a>(Option<&'a [u8]>);

impl ToSql for RawParam<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.0 {
            Some(b) => {
                out.put_slice(b);
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
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
    changed.sort();
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

/// A converted row as its binary COPY fields (what the apply sends),
/// each value written in place after its length.
fn encode_cells(cells: &[Cell<'_>], types: &[Type], buf: &mut BytesMut) {
    buf.clear();
    for (c, ty) in cells.iter().zip(types) {
        let at = buf.len();
        buf.put_i32(0);
        match c.to_sql(ty, buf) {
            Ok(IsNull::No) => {
                let len = i32::try_from(buf.len() - at - 4).unwrap_or(i32::MAX);
                buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
            }
            _ => {
                buf.truncate(at);
                buf.put_i32(-1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(i: u64) -> u128 {
        xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes())
    }

    #[test]
    fn buckets_grow_with_the_period_up_to_a_bound() {
        let small = 1_000_000;
        assert_eq!(buckets_for(0, small), 1);
        assert_eq!(buckets_for(4095, small), 1);
        assert_eq!(buckets_for(200_025, 2_000_250), 32);
        assert_eq!(buckets_for(80_000, small), 16);
        assert_eq!(buckets_for(8192, small), 2);
        assert_eq!(buckets_for(10_000_000, 10_000_000), 1024);
        assert_eq!(buckets_for(u64::MAX, u64::MAX), MAX_BUCKETS);
        for rows in [1u64, 100, 5_000, 1 << 30] {
            assert!(buckets_for(rows, rows).is_power_of_two());
        }
    }

    #[test]
    fn a_large_table_shares_a_fixed_number_of_buckets() {
        // 500 periods of 4 M rows: 1024 buckets each alone, 8 in the table.
        let periods = vec![4_000_000u64; 500];
        let table: u64 = periods.iter().sum();
        let total: usize = periods.iter().map(|&r| buckets_for(r, table)).sum();
        assert!(total <= TABLE_BUCKETS as usize, "{total} buckets");
        // Many small periods: one bucket each.
        let periods = vec![50u64; 10_000];
        let table: u64 = periods.iter().sum();
        let total: usize = periods.iter().map(|&r| buckets_for(r, table)).sum();
        assert_eq!(total, 10_000);
    }

    #[test]
    fn a_diff_explains_a_period_only_when_it_read_every_differing_row() {
        let n = 4;
        let buckets = |rows: &[u64]| {
            let mut b = vec![Digest::default(); n];
            for &r in rows {
                b[bucket(hash(r), n)].add(hash(r));
            }
            b
        };
        // The mirror's period: rows 0..100; the database lost 7 and has 500
        // instead, and 3 twice.
        let mirror: Vec<u64> = (0..100).collect();
        let mut db: Vec<u64> = (0..100).filter(|&r| r != 7).collect();
        db.extend([500, 3]);
        let (mine, theirs) = (buckets(&mirror), buckets(&db));
        let found = |m: &[u64], d: &[u64]| Found {
            read: [buckets(m), buckets(d)],
            ..Found::default()
        };
        assert!(found(&[7], &[500, 3]).explains(&mine, &theirs));
        assert!(
            found(&[7, 3, 40], &[500, 3, 3, 40]).explains(&mine, &theirs),
            "rows alike on both sides do not matter"
        );
        assert!(
            !found(&[7], &[500]).explains(&mine, &theirs),
            "3's copy missed"
        );
        assert!(!found(&[], &[500, 3]).explains(&mine, &theirs), "7 missed");
        assert!(!found(&[7], &[500, 3, 3]).explains(&mine, &theirs));
    }

    #[test]
    fn the_examples_are_the_smallest_hashes() {
        let mut kept = BTreeMap::new();
        for h in (0..100u128).rev() {
            keep_example(&mut kept, h * 7, || h);
        }
        keep_example(&mut kept, 0, || 999);
        assert_eq!(
            kept.keys().copied().collect::<Vec<_>>(),
            (0..10u128).map(|h| h * 7).collect::<Vec<_>>()
        );
        assert_eq!(kept[&0], 0, "a hash kept is not replaced");
    }

    #[test]
    fn a_period_digest_is_the_sum_of_its_buckets() {
        let n = buckets_for(10_000, 10_000);
        let mut whole = Digest::default();
        let mut parts = vec![Digest::default(); n];
        for i in 0..10_000u64 {
            let h = hash(i);
            whole.add(h);
            parts[bucket(h, n)].add(h);
        }
        assert_eq!(Digest::total(&parts), whole);
        assert!(
            parts.iter().filter(|d| d.rows > 0).count() > n * 9 / 10,
            "buckets are used"
        );
    }
}
