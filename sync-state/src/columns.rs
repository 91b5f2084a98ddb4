//! The column vocabulary: the names of the BULK and partition columns, the
//! Postgres column each variable becomes, and the limits those names must
//! keep, checked once when a table's variables first arrive.

use crate::{Error, TableId};

/// The value column of every BULK body and partition.
pub const VALUE_COLUMN: &str = "INDHOLD";
/// The time column of every BULK body and partition (the `Tid` variable
/// upper-cased).
pub const TIME_COLUMN: &str = "TID";
/// Longest identifier Postgres keeps: longer names are cut silently, so a
/// longer column name would later be looked up under a name the table does
/// not have.
pub const MAX_IDENTIFIER_BYTES: usize = 63;
/// Column names a fact or history table cannot have: Postgres's system
/// columns, and the validity columns of `fact_history` tables.
pub const RESERVED_COLUMNS: &[&str] = &[
    "tableoid",
    "xmin",
    "cmin",
    "xmax",
    "cmax",
    "ctid",
    "valid_from",
    "valid_to",
];

/// The column name a partition column (a variable id upper-cased, `TID`,
/// `INDHOLD`) gets in Postgres: lower-cased, then `å→a`, `ø→o`, `æ→ae`
/// (`OMRÅDE` → `omrade`, `KØN` → `kon`).
///
/// ```
/// assert_eq!(sync_state::column_name("OMRÅDE"), "omrade");
/// assert_eq!(sync_state::column_name("KØN"), "kon");
/// assert_eq!(sync_state::column_name("BRÆNDSEL"), "braendsel");
/// ```
pub fn column_name(header: &str) -> String {
    let mut out = String::with_capacity(header.len());
    for c in header.chars().flat_map(char::to_lowercase) {
        match c {
            'å' => out.push('a'),
            'ø' => out.push('o'),
            'æ' => out.push_str("ae"),
            c => out.push(c),
        }
    }
    out
}

/// Checks that every variable of `table` (its ids as tableinfo gives
/// them, the time variable included) becomes a usable, distinct Postgres
/// column: at most [`MAX_IDENTIFIER_BYTES`] bytes, not one of
/// [`RESERVED_COLUMNS`], not `indhold`, and no two the same. Called by the
/// sync before any data request and by the apply before any write, so a
/// table the apply cannot load is refused at once, with the limit named.
///
/// ```
/// use sync_state::{check_variable_columns, TableId};
/// let t = TableId::new("FOLK1A").unwrap();
/// assert!(check_variable_columns(&t, ["OMRÅDE", "KØN", "Tid"]).is_ok());
/// assert!(check_variable_columns(&t, ["CTID", "Tid"]).is_err());
/// assert!(check_variable_columns(&t, ["OMRÅDE", "OMRADE", "Tid"]).is_err());
/// ```
pub fn check_variable_columns<'a>(
    table: &TableId,
    ids: impl IntoIterator<Item = &'a str>,
) -> Result<(), Error> {
    let mut seen: Vec<(String, &str)> = vec![(column_name(VALUE_COLUMN), VALUE_COLUMN)];
    for id in ids {
        let column = column_name(id);
        let bad = |reason: String| Error::InvalidColumn {
            table: table.clone(),
            variable: crate::shorten(id, 80),
            reason,
        };
        if column.is_empty() || column.chars().any(char::is_control) {
            return Err(bad("an empty name or one with control characters".into()));
        }
        if column.len() > MAX_IDENTIFIER_BYTES {
            return Err(bad(format!(
                "its column name is {} bytes; Postgres names are at most {MAX_IDENTIFIER_BYTES} bytes",
                column.len()
            )));
        }
        if RESERVED_COLUMNS.contains(&column.as_str()) {
            return Err(bad(format!(
                "its column name {column:?} is reserved (system and history columns: {})",
                RESERVED_COLUMNS.join(", ")
            )));
        }
        if let Some((_, other)) = seen.iter().find(|(c, _)| *c == column) {
            return Err(bad(format!(
                "its column name {column:?} is also the column of {other:?}"
            )));
        }
        seen.push((column, id));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_named() {
        let t = TableId::new("T").expect("id");
        let err = check_variable_columns(&t, ["X".repeat(64).as_str(), "Tid"])
            .expect_err("too long")
            .to_string();
        assert!(err.contains("63 bytes") && err.contains("table T"), "{err}");
        // 32 two-byte letters (ü stays two bytes) are 64 bytes.
        assert!(check_variable_columns(&t, ["Ü".repeat(32).as_str()]).is_err());
        assert!(check_variable_columns(&t, ["X".repeat(63).as_str()]).is_ok());
        for reserved in ["ctid", "XMIN", "valid_from", "INDHOLD"] {
            assert!(
                check_variable_columns(&t, [reserved]).is_err(),
                "{reserved}"
            );
        }
        let err = check_variable_columns(&t, ["KØN", "KON"]).expect_err("same");
        assert!(err.to_string().contains("\"kon\""), "{err}");
    }
}
