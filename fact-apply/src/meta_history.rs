//! `meta_history` (`--metadata` with `--history`): every version of every
//! table row and value label of the `meta` schema, with its validity
//! interval on StatBank's clock, maintained in the same transaction as
//! `meta.*` (docs/metadata.md).
//!
//! A version is valid from the Danish tableinfo's `updated` of the apply
//! that wrote it until the `updated` of the one that changed or removed it
//! (`valid_to`, `NULL` while current), like `fact_history`. So
//!
//! ```sql
//! SELECT code, label FROM meta_history.value_labels
//! WHERE table_id = 'FOLK1A' AND lang = 'da'
//!   AND valid_from <= $t AND (valid_to IS NULL OR valid_to > $t)
//! ```
//!
//! are the labels as published at `$t`. A label's version changes when its
//! text (or the column it maps to) changes; a table row's when any of its
//! fields does. Rows that did not change are never touched.

use postgres::GenericClient;
use sync_state::tableinfo::Lang;
use sync_state::TableId;

use crate::catalog::quote_ident;
use crate::Error;

/// The columns of `meta.tables` (and of its history table, before
/// `valid_from, valid_to`).
const TABLE_COLUMNS: &str = "table_id, lang, title, description, unit, updated, first_period, \
     latest_period, active, footnote, documentation_url, contacts, fact_table";

/// The columns of `meta.value_labels` (and of its history table).
const LABEL_COLUMNS: &str = "table_id, variable_id, column_name, lang, position, code, label";

/// The history schema of metadata schema `meta` (`meta` → `meta_history`).
pub(crate) fn schema_of(meta: &str) -> String {
    crate::history::schema_of(meta)
}

/// Creates the history schema and its tables when missing (no DDL at all
/// when both are there).
pub(crate) fn ensure(client: &mut impl GenericClient, meta: &str) -> Result<(), Error> {
    let schema = schema_of(meta);
    let row = client
        .query_one(
            "SELECT to_regclass(format('%I.tables', $1::text)) IS NOT NULL \
                AND to_regclass(format('%I.value_labels', $1::text)) IS NOT NULL",
            &[&schema],
        )
        .map_err(Error::meta_schema(
            &schema,
            "looking up the metadata history",
        ))?;
    if row.get::<_, bool>(0) {
        return Ok(());
    }
    let h = quote_ident(&schema);
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {h};
             CREATE TABLE IF NOT EXISTS {h}.tables (
                 table_id text NOT NULL, lang text NOT NULL, title text, description text,
                 unit text, updated timestamptz, first_period text, latest_period text,
                 active boolean, footnote text, documentation_url text, contacts jsonb,
                 fact_table text, valid_from timestamptz NOT NULL, valid_to timestamptz);
             CREATE UNIQUE INDEX IF NOT EXISTS tables_current
                 ON {h}.tables (table_id, lang) WHERE valid_to IS NULL;
             CREATE INDEX IF NOT EXISTS tables_table ON {h}.tables (table_id, lang, valid_from);
             CREATE TABLE IF NOT EXISTS {h}.value_labels (
                 table_id text NOT NULL, variable_id text NOT NULL, column_name text NOT NULL,
                 lang text NOT NULL, position integer NOT NULL, code text NOT NULL, label text,
                 valid_from timestamptz NOT NULL, valid_to timestamptz);
             CREATE UNIQUE INDEX IF NOT EXISTS value_labels_current
                 ON {h}.value_labels (table_id, variable_id, lang, code) WHERE valid_to IS NULL;
             CREATE INDEX IF NOT EXISTS value_labels_table
                 ON {h}.value_labels (table_id, lang, valid_from);"
        ))
        .map_err(Error::meta_schema(&schema, "creating the metadata history"))?;
    Ok(())
}

/// After `meta.*` of `table` was rewritten for `langs`: closes the current
/// versions that are no longer there or differ, and opens the new ones,
/// valid from `updated` (StatBank's clock; now when unknown, and never
/// before a version it supersedes).
pub(crate) fn record(
    tx: &mut impl GenericClient,
    meta: &str,
    table: &TableId,
    langs: &[Lang],
    updated: Option<&str>,
) -> Result<(), Error> {
    ensure(tx, meta)?;
    let (m, h) = (quote_ident(meta), quote_ident(&schema_of(meta)));
    let at = updated
        .and_then(sync_state::source_time_to_utc)
        .unwrap_or_else(chrono::Utc::now)
        .to_rfc3339();
    for lang in langs {
        let params: [&(dyn postgres::types::ToSql + Sync); 3] =
            [&table.as_str(), &lang.as_str(), &at];
        let at = "GREATEST($3::text::timestamptz, \
                  (SELECT max(valid_from) FROM {h}.tables WHERE table_id = $1 AND lang = $2), \
                  (SELECT max(valid_from) FROM {h}.value_labels WHERE table_id = $1 AND lang = $2))"
            .replace("{h}", &h);
        let same_table = "c.table_id = o.table_id AND c.lang = o.lang \
             AND (c.title, c.description, c.unit, c.updated, c.first_period, c.latest_period, \
                  c.active, c.footnote, c.documentation_url, c.contacts, c.fact_table) \
             IS NOT DISTINCT FROM \
                 (o.title, o.description, o.unit, o.updated, o.first_period, o.latest_period, \
                  o.active, o.footnote, o.documentation_url, o.contacts, o.fact_table)";
        let same_label = "c.table_id = o.table_id AND c.lang = o.lang \
             AND c.variable_id = o.variable_id AND c.code = o.code \
             AND c.column_name = o.column_name AND c.label IS NOT DISTINCT FROM o.label";
        for (t, columns, same, key) in [
            ("tables", TABLE_COLUMNS, same_table, "table_id, lang"),
            (
                "value_labels",
                LABEL_COLUMNS,
                same_label,
                "table_id, variable_id, lang, code",
            ),
        ] {
            let prefixed = columns
                .split(", ")
                .map(|c| format!("c.{c}"))
                .collect::<Vec<_>>()
                .join(", ");
            // Closing looks every current version up in `meta` by its
            // primary key; opening inserts every current row and lets the
            // unique index of the current versions skip the unchanged ones
            // (row by row through indexes, whatever the planner knows of
            // the tables' sizes). Two statements: a new version's key is
            // free only once the old one is closed; the start time is the
            // same in both (closing changes no `valid_from`).
            let close = format!(
                "UPDATE {h}.{t} o SET valid_to = GREATEST({at}, o.valid_from) \
                 WHERE o.table_id = $1 AND o.lang = $2 AND o.valid_to IS NULL \
                 AND NOT EXISTS (SELECT 1 FROM {m}.{t} c WHERE {same})"
            );
            let open = format!(
                "INSERT INTO {h}.{t} ({columns}, valid_from) \
                 SELECT {prefixed}, {at} FROM {m}.{t} c \
                 WHERE c.table_id = $1 AND c.lang = $2 \
                 ON CONFLICT ({key}) WHERE valid_to IS NULL DO NOTHING"
            );
            for sql in [close, open] {
                tx.execute(&sql, &params)
                    .map_err(Error::db(table, "writing the metadata history"))?;
            }
        }
    }
    Ok(())
}

/// Closes, at `now`, the current versions of the tables the mirror no
/// longer has (their `meta.*` rows are being removed).
pub(crate) fn close_vanished(
    tx: &mut impl GenericClient,
    meta: &str,
    mirror: &[&str],
) -> Result<u64, postgres::Error> {
    let h = quote_ident(&schema_of(meta));
    let mut closed = 0;
    for t in ["tables", "value_labels"] {
        closed += tx.execute(
            &format!(
                "UPDATE {h}.{t} SET valid_to = GREATEST(now(), valid_from) \
                 WHERE valid_to IS NULL AND table_id <> ALL($1::text[])"
            ),
            &[&mirror],
        )?;
    }
    Ok(closed)
}
