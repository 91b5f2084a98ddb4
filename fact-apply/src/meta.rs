//! The `meta` schema: what a fact table's codes, periods and table mean,
//! from the tableinfo the sync cached, written in the same transaction as
//! the table's facts (docs/metadata.md).
//!
//! Per table: one row per language in `meta.tables`, its variables, one
//! label per code in `meta.value_labels` (the code as the fact column
//! holds it, cast to text, so `fact.x.col::text = code` joins), its periods
//! as calendar days in `meta.periods`, and the view `<schema>_labeled.<t>`
//! with a `<column>_label` after every code column. A failure here rolls
//! back to a savepoint and is reported: the facts are never blocked by
//! their metadata.

use partition_store::PartitionStore;
use postgres::{GenericClient, Transaction};
use sync_state::tableinfo::{Lang, TableInfo};
use sync_state::{PeriodSpan, TableId};

use crate::catalog::{quote_ident, table_oid, TargetColumn};
use crate::conversion::Conv;
use crate::convert::Cell;
use crate::tx::Ctx;
use crate::{ApplyOptions, Error, TableWork};

/// The language the facts are fetched in: its tableinfo is the one the
/// metadata must match.
const LANG: &str = "da";

/// What makes a view in `<schema>_labeled` the project's own: only such a
/// view is ever dropped or replaced.
const VIEW_MARK: &str = "statbank-sync: labels of ";

/// The tables of the `meta` schema keyed by `table_id`.
const META_TABLES: [&str; 5] = [
    "tables",
    "variables",
    "value_labels",
    "periods",
    "table_subjects",
];

/// Every table of the `meta` schema: those keyed by `table_id`, and the
/// subject tree.
const ALL_META_TABLES: [&str; 6] = [
    "tables",
    "variables",
    "value_labels",
    "periods",
    "table_subjects",
    "subjects",
];

/// The suffix of the labeled views' schema (`fact` → `fact_labeled`).
pub(crate) const LABELED_SUFFIX: &str = "_labeled";

/// The schema of the labeled views of fact schema `schema`.
pub(crate) fn labeled_schema(schema: &str) -> String {
    format!("{schema}{LABELED_SUFFIX}")
}

/// What the metadata of one table came to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct MetaOutcome {
    /// Value labels written.
    pub(crate) labels: u64,
    /// Why a language besides Danish was not written (its previous rows
    /// kept).
    pub(crate) note: Option<String>,
}

/// Creates the `meta` schema and its tables when missing; `true` when
/// `meta.tables` did not exist before (the caller then fills it for every
/// table of the mirror).
pub(crate) fn ensure_schema(client: &mut postgres::Client, meta: &str) -> Result<bool, Error> {
    let m = quote_ident(meta);
    // All four tables there: no DDL at all (a role without CREATE on the
    // database can then still maintain a schema made for it).
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE to_regclass(format('%I.%I', $1::text, t)) IS NOT NULL), \
                    bool_or(t = 'tables' AND to_regclass(format('%I.%I', $1::text, t)) IS NOT NULL) \
             FROM unnest($2::text[]) t",
            &[&meta, &&ALL_META_TABLES[..]],
        )
        .map_err(Error::meta_schema(meta, "looking up the meta schema"))?;
    let (found, existed): (i64, bool) = (row.get(0), row.get(1));
    if found == ALL_META_TABLES.len() as i64 {
        return Ok(false);
    }
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {m};
             CREATE TABLE IF NOT EXISTS {m}.tables (
                 table_id text NOT NULL, lang text NOT NULL, title text, description text,
                 unit text, updated timestamptz, first_period text, latest_period text,
                 active boolean, footnote text, documentation_url text, contacts jsonb,
                 fact_table text, PRIMARY KEY (table_id, lang));
             CREATE TABLE IF NOT EXISTS {m}.variables (
                 table_id text NOT NULL, lang text NOT NULL, position integer NOT NULL,
                 variable_id text NOT NULL, column_name text NOT NULL, text text,
                 elimination boolean, is_time boolean, map text,
                 PRIMARY KEY (table_id, lang, variable_id));
             CREATE TABLE IF NOT EXISTS {m}.value_labels (
                 table_id text NOT NULL, variable_id text NOT NULL, column_name text NOT NULL,
                 lang text NOT NULL, position integer NOT NULL, code text NOT NULL, label text,
                 PRIMARY KEY (table_id, variable_id, lang, code));
             CREATE TABLE IF NOT EXISTS {m}.periods (
                 table_id text NOT NULL, tid text NOT NULL, frequency text,
                 period_start date, period_end date, PRIMARY KEY (table_id, tid));
             CREATE TABLE IF NOT EXISTS {m}.subjects (
                 subject_id text NOT NULL, parent_id text, lang text NOT NULL,
                 description text, position integer, PRIMARY KEY (subject_id, lang));
             CREATE TABLE IF NOT EXISTS {m}.table_subjects (
                 table_id text NOT NULL, subject_id text NOT NULL,
                 PRIMARY KEY (table_id, subject_id));"
        ))
        .map_err(Error::meta_schema(meta, "creating the meta schema"))?;
    Ok(!existed)
}

/// Before a run's tables: creates the `meta` schema when metadata is on
/// (and, when it did not exist, fills it for every table of the mirror
/// that the run does not apply). Returns the options to apply with and,
/// when the schema cannot be made, why: the run then applies facts only
/// and every table reports the reason.
pub(crate) fn prepare_run(
    client: &mut postgres::Client,
    store: &PartitionStore,
    work: &[TableWork],
    opts: &ApplyOptions,
) -> (ApplyOptions, Option<String>) {
    let Some(meta) = opts.metadata.schema().filter(|_| !opts.dry_run) else {
        return (opts.clone(), None);
    };
    match ensure_schema(client, meta) {
        Ok(created) => {
            // The mirror's tables, listed once for every step below.
            let Some(tables) = mirror_tables(store) else {
                return (opts.clone(), None);
            };
            if created {
                let _ = backfill(client, store, &tables, work, opts);
            } else {
                forget_vanished(client, &tables, meta, opts.history);
            }
            write_subjects(client, store, &tables, meta);
            (opts.clone(), None)
        }
        Err(e) => {
            let reason = report_text(&e);
            tracing::error!(error = %reason, "metadata off for this run; facts are applied");
            let facts_only = ApplyOptions {
                metadata: crate::Metadata::Off,
                ..opts.clone()
            };
            (facts_only, Some(reason))
        }
    }
}

/// Creates the `meta` schema when `opts` maintain metadata and it does not
/// exist yet, and then fills it for every table of the mirror (each in a
/// transaction of its own; a table that fails is logged and counted).
/// What an existing mirror and database need once, before or without any
/// run to apply: `statbank-apply --metadata` calls it first. `Ok(None)`
/// when metadata is off, the run is dry or the schema existed.
///
/// Blocking, like [`crate::apply_run`].
pub fn prepare_metadata(
    client: &mut postgres::Client,
    data: &sync_state::DataDir,
    opts: &ApplyOptions,
) -> Result<Option<Backfill>, Error> {
    let Some(meta) = opts.metadata.schema().filter(|_| !opts.dry_run) else {
        return Ok(None);
    };
    if !ensure_schema(client, meta)? {
        return Ok(None);
    }
    let store = PartitionStore::new(data);
    let tables = mirror_tables(&store).unwrap_or_default();
    Ok(Some(backfill(client, &store, &tables, &[], opts)))
}

/// What filling a new `meta` schema did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backfill {
    /// Tables whose metadata was written.
    pub tables: usize,
    /// Tables whose metadata failed (logged with the reason).
    pub failed: usize,
}

/// `meta.subjects` and `meta.table_subjects` from the cached subject trees
/// (`metadata/subjects_<lang>.json`), replaced whole in one transaction:
/// every subject in each cached language, and the subjects of every table
/// the mirror has. Nothing changes when there is no cached tree; a failure
/// is logged and keeps the previous rows.
fn write_subjects(
    client: &mut postgres::Client,
    store: &PartitionStore,
    tables: &[TableId],
    meta: &str,
) {
    let result = subject_rows(store, tables).and_then(|rows| {
        if rows.ids.is_empty() {
            return Ok(0);
        }
        replace_subjects(client, &quote_ident(meta), &rows).map_err(|e| e.to_string())
    });
    match result {
        Ok(0) => {}
        Ok(n) => tracing::debug!(rows = n, "metadata: subject tree written"),
        Err(e) => {
            tracing::warn!(error = %e, "metadata: the subject tree was not written; the previous one is kept")
        }
    }
}

/// The rows of `meta.subjects` (as columns) and `meta.table_subjects`.
#[derive(Default)]
struct SubjectRows {
    ids: Vec<String>,
    parents: Vec<Option<String>>,
    langs: Vec<&'static str>,
    descriptions: Vec<String>,
    positions: Vec<i32>,
    /// `(table_id, subject_id)`, each once.
    links: std::collections::BTreeSet<(String, String)>,
}

fn subject_rows(store: &PartitionStore, tables: &[TableId]) -> Result<SubjectRows, String> {
    let mirrored: std::collections::BTreeSet<&str> = tables.iter().map(|t| t.as_str()).collect();
    let mut out = SubjectRows::default();
    for lang in Lang::ALL {
        let tree = sync_state::subjects::cached_subjects(store.data_dir(), lang)
            .map_err(|e| sync_state::error_chain(&e))?;
        let Some(tree) = tree else { continue };
        for r in sync_state::subjects::flatten(&tree) {
            out.ids.push(r.subject.id.clone());
            out.parents.push(r.parent.map(str::to_owned));
            out.langs.push(lang.as_str());
            out.descriptions.push(r.subject.description.clone());
            out.positions
                .push(i32::try_from(r.position).unwrap_or(i32::MAX));
            for t in &r.subject.tables {
                let id = t.id.to_uppercase();
                if mirrored.contains(id.as_str()) {
                    out.links.insert((id, r.subject.id.clone()));
                }
            }
        }
    }
    Ok(out)
}

fn replace_subjects(
    client: &mut postgres::Client,
    m: &str,
    rows: &SubjectRows,
) -> Result<u64, postgres::Error> {
    let mut tx = client.transaction()?;
    tx.batch_execute(&format!(
        "DELETE FROM {m}.subjects; DELETE FROM {m}.table_subjects;"
    ))?;
    let mut n = tx.execute(
        &format!(
            "INSERT INTO {m}.subjects (subject_id, parent_id, lang, description, position) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::integer[]) \
             ON CONFLICT DO NOTHING"
        ),
        &[
            &rows.ids,
            &rows.parents,
            &rows.langs,
            &rows.descriptions,
            &rows.positions,
        ],
    )?;
    let (tables, subjects): (Vec<&str>, Vec<&str>) = rows
        .links
        .iter()
        .map(|(t, s)| (t.as_str(), s.as_str()))
        .unzip();
    n += tx.execute(
        &format!(
            "INSERT INTO {m}.table_subjects (table_id, subject_id) \
             SELECT * FROM unnest($1::text[], $2::text[])"
        ),
        &[&tables, &subjects],
    )?;
    tx.commit()?;
    Ok(n)
}

/// The tables of the mirror (those with a partition folder); `None`, logged,
/// when they cannot be listed: nothing of the metadata that depends on the
/// list is then touched.
fn mirror_tables(store: &PartitionStore) -> Option<Vec<TableId>> {
    match store.list_tables() {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(error = %sync_state::error_chain(&e), "metadata: cannot list the mirror's tables; no metadata is backfilled, removed or filed under subjects");
            None
        }
    }
}

/// The metadata of tables the mirror no longer has (no partition folder)
/// goes with them; nothing is removed when the mirror cannot be listed.
/// With `history`, their current versions in the metadata history are
/// closed in the same transaction.
fn forget_vanished(client: &mut postgres::Client, tables: &[TableId], meta: &str, history: bool) {
    let tables: Vec<&str> = tables.iter().map(|t| t.as_str()).collect();
    let m = quote_ident(meta);
    let sql = META_TABLES
        .iter()
        .map(|t| format!("DELETE FROM {m}.{t} WHERE table_id <> ALL($1::text[]);"))
        .collect::<Vec<_>>();
    let result = client
        .transaction()
        .map_err(|e| e.to_string())
        .and_then(|mut tx| {
            let mut removed = 0;
            if history {
                crate::meta_history::ensure(&mut tx, meta).map_err(|e| e.to_string())?;
                removed += crate::meta_history::close_vanished(&mut tx, meta, &tables)
                    .map_err(|e| e.to_string())?;
            }
            for q in &sql {
                removed += tx
                    .execute(q.as_str(), &[&tables])
                    .map_err(|e| e.to_string())?;
            }
            tx.commit().map(|()| removed).map_err(|e| e.to_string())
        });
    match result {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            rows = n,
            "metadata of tables no longer in the mirror removed"
        ),
        Err(e) => tracing::warn!(error = %e, "metadata: removing vanished tables failed"),
    }
}

/// Tables filled per transaction by a backfill: each behind a savepoint of
/// its own, so one that fails is rolled back alone, and a commit (a WAL
/// flush) serves many tables.
const BACKFILL_CHUNK: usize = 64;

/// A new `meta` schema gets every table that has partitions, not only
/// the ones a run changes.
fn backfill(
    client: &mut postgres::Client,
    store: &PartitionStore,
    tables: &[TableId],
    work: &[TableWork],
    opts: &ApplyOptions,
) -> Backfill {
    let todo: Vec<&TableId> = tables
        .iter()
        .filter(|t| !work.iter().any(|w| &w.table == *t))
        .collect();
    let mut filled = Backfill::default();
    for chunk in todo.chunks(BACKFILL_CHUNK) {
        let (done, failed) = backfill_chunk(client, store, chunk, opts);
        filled.tables += done;
        filled.failed += failed;
    }
    tracing::info!(
        tables = filled.tables,
        failed = filled.failed,
        "metadata: new schema filled from the mirror"
    );
    filled
}

/// One transaction of a backfill: how many tables were filled and failed.
fn backfill_chunk(
    client: &mut postgres::Client,
    store: &PartitionStore,
    chunk: &[&TableId],
    opts: &ApplyOptions,
) -> (usize, usize) {
    let Some(first) = chunk.first() else {
        return (0, 0);
    };
    let mut tx = match crate::tx::begin(client, first, false) {
        Ok(tx) => tx,
        Err(e) => {
            tracing::warn!(error = %sync_state::error_chain(&e), "metadata backfill: cannot begin");
            return (0, chunk.len());
        }
    };
    let (mut done, mut failed) = (0usize, 0usize);
    for table in chunk {
        let ctx = Ctx::new(store, table, opts);
        match write_in(&mut tx, &ctx) {
            Ok(_) => done += 1,
            Err(e) => {
                failed += 1;
                tracing::warn!(table = %table, error = %sync_state::error_chain(&e), "metadata backfill failed for the table");
            }
        }
    }
    match tx.commit() {
        Ok(()) => (done, failed),
        Err(e) => {
            tracing::warn!(error = %e, tables = chunk.len(), "metadata backfill: commit failed");
            (0, chunk.len())
        }
    }
}

/// The metadata step of every apply path, just before its commit: `None`
/// when metadata is off or the apply is a dry run; a failure is logged and
/// returned for the report, and only the metadata is rolled back.
pub(crate) fn before_commit(
    tx: &mut Transaction<'_>,
    ctx: &Ctx<'_>,
) -> Option<Result<MetaOutcome, String>> {
    ctx.opts.metadata.schema()?;
    if ctx.opts.dry_run {
        return None;
    }
    let t0 = std::time::Instant::now();
    let written = write_in(tx, ctx);
    tracing::debug!(table = %ctx.table, secs = t0.elapsed().as_secs_f64(), "metadata step");
    Some(written.map_err(|e| {
        let e = report_text(&e);
        tracing::warn!(table = %ctx.table, error = %e, "metadata not applied; facts are");
        e
    }))
}

/// A table with no fact table still gets its metadata (`fact_table` NULL),
/// in a transaction of its own; `None` when metadata is off or the apply
/// is a dry run.
pub(crate) fn alone(
    client: &mut postgres::Client,
    ctx: &Ctx<'_>,
) -> Option<Result<MetaOutcome, String>> {
    ctx.opts.metadata.schema()?;
    if ctx.opts.dry_run {
        return None;
    }
    Some(write_alone(client, ctx).map_err(|e| report_text(&e)))
}

/// An error as a table's result carries it.
fn report_text(e: &Error) -> String {
    sync_state::shorten_error(sync_state::error_chain(e))
}

/// Records the metadata step in a table's result.
pub(crate) fn record(
    result: &mut sync_state::ApplyTableResult,
    step: Option<Result<MetaOutcome, String>>,
) {
    match step {
        Some(Ok(m)) => {
            result.metadata_labels = Some(m.labels);
            result.metadata_error = m.note;
        }
        Some(Err(e)) => result.metadata_error = Some(e),
        None => {}
    }
}

/// Writes `ctx.table`'s metadata inside `tx` behind a savepoint: on
/// failure only the metadata is rolled back and the error returned for the
/// report; the caller's transaction goes on.
pub(crate) fn write_in(tx: &mut Transaction<'_>, ctx: &Ctx<'_>) -> Result<MetaOutcome, Error> {
    let mut sp = tx
        .savepoint("statbank_meta")
        .map_err(Error::db(ctx.table, "metadata savepoint"))?;
    let outcome = write_table(&mut sp, ctx)?;
    sp.commit()
        .map_err(Error::db(ctx.table, "releasing the metadata savepoint"))?;
    Ok(outcome)
}

/// Writes the metadata of a table outside any apply (one transaction of
/// its own): a table with no fact table, or every table when the schema
/// is first created.
pub(crate) fn write_alone(
    client: &mut postgres::Client,
    ctx: &Ctx<'_>,
) -> Result<MetaOutcome, Error> {
    let mut tx = crate::tx::begin(client, ctx.table, false)?;
    let outcome = write_table(&mut tx, ctx)?;
    tx.commit()
        .map_err(Error::db(ctx.table, "committing the metadata"))?;
    Ok(outcome)
}

fn write_table(tx: &mut Transaction<'_>, ctx: &Ctx<'_>) -> Result<MetaOutcome, Error> {
    let Some(meta) = ctx.opts.metadata.schema() else {
        return Ok(MetaOutcome::default());
    };
    let info = cached(ctx)?;
    check_matches(ctx.table, &info)?;
    let (english, note) = english(ctx, &info)?;
    let oid = table_oid(tx, &ctx.opts.schema, &ctx.name)
        .map_err(Error::db(ctx.table, "looking up the target table"))?;
    let columns = match oid {
        Some(oid) => crate::catalog::table_columns(tx, ctx.table, oid)?,
        None => Vec::new(),
    };
    let m = quote_ident(meta);
    remove_periods(tx, &m, ctx.table)?;
    let mut labels = 0;
    let mut written = Vec::new();
    for (lang, info) in [(Lang::Da, Some(&info)), (Lang::En, english.as_ref())] {
        let Some(info) = info else { continue };
        remove_table(tx, &m, ctx.table, lang)?;
        insert_table_row(tx, &m, ctx, info, lang, oid.is_some())?;
        insert_variables(tx, &m, ctx.table, info, lang)?;
        labels += insert_labels(tx, &m, ctx.table, info, lang, &columns)?;
        written.push(lang);
    }
    insert_periods(tx, &m, ctx.table, &info)?;
    if ctx.opts.history {
        crate::meta_history::record(tx, meta, ctx.table, &written, info.updated.as_deref())?;
    }
    if oid.is_some() {
        let with_english = english.is_some() || has_rows_in(tx, &m, ctx.table, Lang::En)?;
        replace_view(tx, meta, ctx, &info, &columns, with_english)?;
    }
    Ok(MetaOutcome { labels, note })
}

/// The cached English tableinfo, when it describes the same table as the
/// Danish one (`None`, with a note, when there is none or it is of another
/// `updated`: the table's English rows are then kept as they were). One of
/// the same `updated` with other variables or values is bad input: the
/// table's metadata fails, and all of it is kept as it was.
fn english(ctx: &Ctx<'_>, da: &TableInfo) -> Result<(Option<TableInfo>, Option<String>), Error> {
    let fail = |reason: String| Error::Metadata {
        table: ctx.table.clone(),
        lang: Lang::En.as_str(),
        reason,
    };
    let en = sync_state::tableinfo::cached_tableinfo_in(ctx.store.data_dir(), ctx.table, Lang::En)
        .map_err(|e| fail(sync_state::error_chain(&e)))?;
    let Some(en) = en else {
        return Ok((None, None));
    };
    if en.updated != da.updated {
        let note = format!(
            "metadata of table {} in en: the cached English tableinfo is of {:?}, the Danish one of {:?}; \
             the English metadata is kept as it was until a sync fetches it",
            ctx.table, en.updated, da.updated
        );
        return Ok((None, Some(note)));
    }
    match sync_state::tableinfo::mismatch(da, &en) {
        None => Ok((Some(en), None)),
        Some(why) => Err(fail(format!(
            "the cached English tableinfo does not match the Danish one: {why}"
        ))),
    }
}

/// Whether `table` has rows of `lang` in `meta.tables`.
fn has_rows_in(
    tx: &mut Transaction<'_>,
    m: &str,
    table: &TableId,
    lang: Lang,
) -> Result<bool, Error> {
    tx.query_one(
        &format!("SELECT EXISTS (SELECT 1 FROM {m}.tables WHERE table_id = $1 AND lang = $2)"),
        &[&table.as_str(), &lang.as_str()],
    )
    .and_then(|r| r.try_get(0))
    .map_err(Error::db(table, "looking up the metadata"))
}

/// The cached Danish tableinfo the table's partitions were fetched with.
fn cached(ctx: &Ctx<'_>) -> Result<TableInfo, Error> {
    let metadata = |reason: String| Error::Metadata {
        table: ctx.table.clone(),
        lang: LANG,
        reason,
    };
    match sync_state::tableinfo::cached_tableinfo(ctx.store.data_dir(), ctx.table) {
        Ok(Some(info)) => Ok(info),
        Ok(None) => Err(metadata(format!(
            "no cached tableinfo at {}",
            ctx.store
                .data_dir()
                .display_key(&ctx.store.data_dir().metadata_file_key(ctx.table))
        ))),
        Err(e) => Err(metadata(sync_state::error_chain(&e))),
    }
}

/// The cache must describe this table, and its variables must map to
/// distinct, usable columns (the rule the sync applies to them).
fn check_matches(table: &TableId, info: &TableInfo) -> Result<(), Error> {
    let fail = |reason: String| Error::Metadata {
        table: table.clone(),
        lang: LANG,
        reason,
    };
    if !info.id.eq_ignore_ascii_case(table.as_str()) {
        return Err(fail(format!(
            "the cached tableinfo is of table {:?}",
            info.id
        )));
    }
    sync_state::check_variable_columns(table, info.variables.iter().map(|v| v.id.as_str()))
        .map_err(|e| fail(sync_state::error_chain(&e)))
}

fn remove_table(
    tx: &mut Transaction<'_>,
    m: &str,
    table: &TableId,
    lang: Lang,
) -> Result<(), Error> {
    let id = table.as_str();
    for t in ["tables", "variables", "value_labels"] {
        tx.execute(
            &format!("DELETE FROM {m}.{t} WHERE table_id = $1 AND lang = $2"),
            &[&id, &lang.as_str()],
        )
        .map_err(Error::db(table, "removing the old metadata"))?;
    }
    Ok(())
}

fn remove_periods(tx: &mut Transaction<'_>, m: &str, table: &TableId) -> Result<(), Error> {
    tx.execute(
        &format!("DELETE FROM {m}.periods WHERE table_id = $1"),
        &[&table.as_str()],
    )
    .map_err(Error::db(table, "removing the old metadata"))?;
    Ok(())
}

fn insert_table_row(
    tx: &mut Transaction<'_>,
    m: &str,
    ctx: &Ctx<'_>,
    info: &TableInfo,
    lang: Lang,
    has_fact_table: bool,
) -> Result<(), Error> {
    let periods = info.time_variable().map(|v| &v.values[..]).unwrap_or(&[]);
    let updated = info
        .updated
        .as_deref()
        .and_then(sync_state::source_time_to_utc)
        .map(|t| t.to_rfc3339());
    let footnote = info
        .footnote
        .as_ref()
        .map(|f| html_escape::decode_html_entities(&f.text).into_owned())
        .filter(|t| !t.is_empty());
    let documentation = info.documentation.as_ref().and_then(|d| d.url.clone());
    let contacts = serde_json::to_string(&info.contacts).unwrap_or_else(|_| "[]".into());
    let fact_table = has_fact_table.then(|| readable_name(&ctx.opts.schema, &ctx.name));
    tx.execute(
        &format!(
            "INSERT INTO {m}.tables (table_id, lang, title, description, unit, updated, \
             first_period, latest_period, active, footnote, documentation_url, contacts, \
             fact_table) VALUES ($1, $2, $3, $4, $5, $6::text::timestamptz, $7, $8, $9, $10, \
             $11, $12::text::jsonb, $13)"
        ),
        &[
            &ctx.table.as_str(),
            &lang.as_str(),
            &info.text,
            &info.description,
            &info.unit,
            &updated,
            &periods.first().map(|v| v.id.as_str()),
            &periods.last().map(|v| v.id.as_str()),
            &info.active,
            &footnote,
            &documentation,
            &contacts,
            &fact_table,
        ],
    )
    .map_err(Error::db(ctx.table, "writing meta.tables"))?;
    Ok(())
}

fn insert_variables(
    tx: &mut Transaction<'_>,
    m: &str,
    table: &TableId,
    info: &TableInfo,
    lang: Lang,
) -> Result<(), Error> {
    let time_id = info.time_variable().map(|v| v.id.clone());
    let stmt = tx
        .prepare(&format!(
            "INSERT INTO {m}.variables (table_id, lang, position, variable_id, column_name, \
             text, elimination, is_time, map) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .map_err(Error::db(table, "writing meta.variables"))?;
    for (i, v) in info.variables.iter().enumerate() {
        let position = i32::try_from(i + 1).unwrap_or(i32::MAX);
        let is_time = time_id.as_deref() == Some(v.id.as_str());
        tx.execute(
            &stmt,
            &[
                &table.as_str(),
                &lang.as_str(),
                &position,
                &v.id,
                &sync_state::column_name(&v.id),
                &v.text,
                &v.elimination,
                &is_time,
                &v.map,
            ],
        )
        .map_err(Error::db(table, "writing meta.variables"))?;
    }
    Ok(())
}

/// The text of a value of type `pg_type` as `meta.value_labels.code` holds
/// it and the labeled view compares it: Postgres's own text form, except
/// dates, written `YYYY-MM-DD` whatever the session's `DateStyle`.
fn code_expr(pg_type: &str, value: &str) -> String {
    if pg_type == "date" {
        format!("to_char({value}, 'YYYY-MM-DD')")
    } else {
        format!("{value}::text")
    }
}

/// One variable's labels in one statement: positions, codes (converted as
/// the apply converts them, in the fact column's type, or as StatBank
/// writes them when the table has no such column) and labels as arrays.
fn insert_labels(
    tx: &mut Transaction<'_>,
    m: &str,
    table: &TableId,
    info: &TableInfo,
    lang: Lang,
    columns: &[TargetColumn],
) -> Result<u64, Error> {
    let mut written = 0u64;
    for v in &info.variables {
        let column = sync_state::column_name(&v.id);
        let typed = columns
            .iter()
            .find(|c| c.name == column)
            .and_then(|tc| Conv::for_codes(tc, &column).map(|conv| (conv, tc.type_name.as_str())));
        let mut positions: Vec<i32> = Vec::with_capacity(v.values.len());
        let mut codes: Vec<Cell<'_>> = Vec::with_capacity(v.values.len());
        let mut labels: Vec<&str> = Vec::with_capacity(v.values.len());
        for (i, value) in v.values.iter().enumerate() {
            let code = match &typed {
                None => Cell::Text(&value.id),
                Some((conv, _)) => match conv.text(&value.id) {
                    Ok(c) => c,
                    // A code the column's type cannot hold has no fact row to label.
                    Err(_) => continue,
                },
            };
            positions.push(i32::try_from(i + 1).unwrap_or(i32::MAX));
            codes.push(code);
            labels.push(&value.text);
        }
        let pg_type = typed.as_ref().map_or("text", |(_, t)| t);
        let sql = format!(
            "INSERT INTO {m}.value_labels (table_id, variable_id, column_name, lang, position, \
             code, label) SELECT $1, $2, $3, $4, u.p, {}, u.l \
             FROM unnest($5::integer[], $6::{pg_type}[], $7::text[]) AS u(p, c, l) \
             ON CONFLICT DO NOTHING",
            code_expr(pg_type, "u.c")
        );
        written += tx
            .execute(
                &sql,
                &[
                    &table.as_str(),
                    &v.id,
                    &column,
                    &lang.as_str(),
                    &positions,
                    &codes,
                    &labels,
                ],
            )
            .map_err(Error::db(table, "writing meta.value_labels"))?;
    }
    Ok(written)
}

fn insert_periods(
    tx: &mut Transaction<'_>,
    m: &str,
    table: &TableId,
    info: &TableInfo,
) -> Result<(), Error> {
    let Some(time) = info.time_variable() else {
        return Ok(());
    };
    let day = |d: Option<chrono::NaiveDate>| d.map(|d| d.format("%Y-%m-%d").to_string());
    let (mut tids, mut freqs, mut starts, mut ends) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for value in &time.values {
        let span = PeriodSpan::of(&value.id);
        tids.push(value.id.as_str());
        freqs.push(span.frequency.as_str());
        starts.push(day(span.start));
        ends.push(day(span.end));
    }
    tx.execute(
        &format!(
            "INSERT INTO {m}.periods (table_id, tid, frequency, period_start, period_end) \
             SELECT $1, u.t, u.f, u.s::date, u.e::date \
             FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS u(t, f, s, e) \
             ON CONFLICT DO NOTHING"
        ),
        &[&table.as_str(), &tids, &freqs, &starts, &ends],
    )
    .map_err(Error::db(table, "writing meta.periods"))?;
    Ok(())
}

/// `<schema>_labeled.<t>`: every fact column, and after each code column
/// its Danish label. Value labels are unique per (table, variable, lang,
/// code), so the left joins neither multiply nor drop rows.
fn replace_view(
    tx: &mut Transaction<'_>,
    meta: &str,
    ctx: &Ctx<'_>,
    info: &TableInfo,
    columns: &[TargetColumn],
    with_english: bool,
) -> Result<(), Error> {
    let schema = labeled_schema(&ctx.opts.schema);
    let view = crate::catalog::qualified(&schema, &ctx.name);
    drop_own_view(tx, ctx, &schema)?;
    let m = quote_ident(meta);
    let mut select = Vec::new();
    let mut joins = Vec::new();
    for c in columns {
        let col = quote_ident(&c.name);
        select.push(format!("f.{col}"));
        let Some(v) = info
            .variables
            .iter()
            .find(|v| sync_state::column_name(&v.id) == c.name)
        else {
            continue;
        };
        let langs: &[(Lang, &str)] = if with_english {
            &[(Lang::Da, "_label"), (Lang::En, "_label_en")]
        } else {
            &[(Lang::Da, "_label")]
        };
        for (lang, suffix) in langs {
            let alias = format!("l{}", joins.len());
            joins.push(format!(
                "LEFT JOIN {m}.value_labels {alias} ON {alias}.table_id = {} AND \
                 {alias}.variable_id = {} AND {alias}.lang = '{lang}' AND {alias}.code = {}",
                literal(ctx.table.as_str()),
                literal(&v.id),
                code_expr(&c.type_name, &format!("f.{col}"))
            ));
            select.push(format!(
                "{alias}.label AS {}",
                quote_ident(&format!("{}{suffix}", c.name))
            ));
        }
    }
    let has_schema: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)",
            &[&schema],
        )
        .and_then(|r| r.try_get(0))
        .map_err(Error::db(ctx.table, "looking up the labeled schema"))?;
    let create_schema = if has_schema {
        String::new()
    } else {
        format!("CREATE SCHEMA {};", quote_ident(&schema))
    };
    let sql = format!(
        "{create_schema} CREATE VIEW {view} AS SELECT {} FROM {} f {}; \
         COMMENT ON VIEW {view} IS {}",
        select.join(", "),
        ctx.target,
        joins.join(" "),
        literal(&format!("{VIEW_MARK}{}", ctx.target)),
    );
    tx.batch_execute(&sql)
        .map_err(Error::db(ctx.table, "creating the labeled view"))
}

/// What holds the name of a table's labeled view.
enum ViewName {
    Free,
    /// A view this project created (its comment says so).
    Ours,
    /// Something else: never dropped.
    Foreign(String),
}

fn view_name(tx: &mut impl GenericClient, ctx: &Ctx<'_>, schema: &str) -> Result<ViewName, Error> {
    let row = tx
        .query_opt(
            "SELECT c.relkind::text, coalesce(obj_description(c.oid, 'pg_class'), '') \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2",
            &[&schema, &ctx.name],
        )
        .map_err(Error::db(ctx.table, "looking up the labeled view"))?;
    Ok(match row {
        None => ViewName::Free,
        Some(row) => {
            let kind: String = row.get(0);
            let comment: String = row.get(1);
            if kind == "v" && comment.starts_with(VIEW_MARK) {
                ViewName::Ours
            } else {
                ViewName::Foreign(format!(
                    "{}.{} exists and is not a labeled view this project created; left alone",
                    quote_ident(schema),
                    quote_ident(&ctx.name)
                ))
            }
        }
    })
}

fn drop_view(tx: &mut impl GenericClient, ctx: &Ctx<'_>, schema: &str) -> Result<(), Error> {
    tx.batch_execute(&format!(
        "DROP VIEW {}",
        crate::catalog::qualified(schema, &ctx.name)
    ))
    .map_err(Error::db(ctx.table, "dropping the old labeled view"))
}

/// Drops the table's labeled view before it is replaced; anything else of
/// that name fails the metadata.
fn drop_own_view(tx: &mut impl GenericClient, ctx: &Ctx<'_>, schema: &str) -> Result<(), Error> {
    match view_name(tx, ctx, schema)? {
        ViewName::Free => Ok(()),
        ViewName::Ours => drop_view(tx, ctx, schema),
        ViewName::Foreign(reason) => Err(Error::Metadata {
            table: ctx.table.clone(),
            lang: LANG,
            reason,
        }),
    }
}

/// Before a rebuild drops the old fact table: its labeled view goes first
/// (it depends on the table), whatever the metadata setting; the metadata
/// step recreates it when metadata is on. Other relations are left alone.
pub(crate) fn before_table_drop(tx: &mut impl GenericClient, ctx: &Ctx<'_>) -> Result<(), Error> {
    let schema = labeled_schema(&ctx.opts.schema);
    match view_name(tx, ctx, &schema)? {
        ViewName::Ours => drop_view(tx, ctx, &schema),
        ViewName::Free | ViewName::Foreign(_) => Ok(()),
    }
}

/// `fact.folk1a`, quoting only the parts that need it (a fact table's
/// own name never does: table ids are `A-Z0-9`).
fn readable_name(schema: &str, name: &str) -> String {
    let plain = |s: &str| {
        s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    let part = |s: &str| {
        if plain(s) {
            s.to_owned()
        } else {
            quote_ident(s)
        }
    };
    format!("{}.{}", part(schema), part(name))
}

/// A SQL string literal.
/// An escape-string literal, so its meaning does not depend on
/// `standard_conforming_strings`.
fn literal(s: &str) -> String {
    format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_escape_quotes_and_backslashes() {
        assert_eq!(literal("FOLK1A"), "E'FOLK1A'");
        assert_eq!(literal(r"a'b\c"), r"E'a''b\\c'");
    }

    #[test]
    fn readable_names_quote_only_what_needs_it() {
        assert_eq!(readable_name("fact", "folk1a"), "fact.folk1a");
        assert_eq!(readable_name("Fact Data", "folk1a"), "\"Fact Data\".folk1a");
    }

    #[test]
    fn dates_compare_in_one_form_whatever_the_session() {
        assert_eq!(code_expr("date", "f.tid"), "to_char(f.tid, 'YYYY-MM-DD')");
        assert_eq!(code_expr("integer", "f.alder"), "f.alder::text");
    }
}
