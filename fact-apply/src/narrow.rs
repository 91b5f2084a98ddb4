//! Narrowing a differing period of the reconcile to the rows that can
//! differ, by value.
//!
//! Besides its hash buckets, each side digests the whole table once more
//! per value of a narrowing column: the code column with the most values
//! (at most [`MAX_VALUES`], by the cached tableinfo). A row that only one
//! side has changes the digest of its own value, so the rows that differ
//! all lie where that column holds one of its differing values: `alder IN
//! ('35')`. That is a predicate the server evaluates with the table's
//! indexes, so the row-level diff of one edited row reads a small share of
//! its period instead of all of it again. One column, because each value
//! digest costs every one of the millions of rows a lookup on both sides.
//!
//! The digests are the table's, not each period's: a side keeps its
//! column's values once with one 24-byte digest each (127 values: about
//! 13 KB), whatever the number of periods, within [`VALUE_BYTES`]. A
//! differing period is narrowed to the values that differ anywhere in the
//! table; whether those rows hold all of the period's difference is then
//! proved by the period's bucket digests ([`crate::reconcile`]), and when
//! they do not, the period is read by bucket.

use std::collections::HashSet;

use rustc_hash::FxHashMap;

use crate::reconcile::Digest;

/// Values of a column at most (by the tableinfo) for it to narrow.
pub(crate) const MAX_VALUES: usize = 1024;

/// Bytes a side's value digests take at most, counted as [`DIGEST_BYTES`]
/// and [`KEY_BYTES`] a value, besides the value's own bytes (a column
/// holding values the tableinfo does not list, or long ones, may exceed
/// it: it then does not narrow).
const VALUE_BYTES: usize = 128 * 1024;

/// A digest's bytes.
const DIGEST_BYTES: usize = std::mem::size_of::<Digest>();

/// A value's bytes besides its own and its digest: its vector, its map
/// entry and index, the allocator's header.
const KEY_BYTES: usize = 72;

/// Differing values that still narrow (each is a literal in the
/// predicate).
const MAX_KEYS: usize = 64;

/// Rows (of both sides) a narrowed diff is expected to read at most;
/// above it reading the period's differing buckets costs about the same.
pub(crate) const NARROW_ROWS: u64 = 65_536;

/// A row's field as sent in a binary COPY: its 4-byte length (`-1`:
/// NULL) and its bytes.
pub(crate) type Key = Vec<u8>;

/// One side's digests of the table's rows per value of the narrowing
/// column.
#[derive(Debug, Clone)]
pub(crate) struct ValueDigests {
    /// The column's position in the row.
    col: usize,
    /// Each value seen → its index in `digests`.
    keys: FxHashMap<Key, u32>,
    /// The digest of each value's rows, by index.
    digests: Vec<Digest>,
    /// The bytes held, as [`VALUE_BYTES`] counts them.
    bytes: usize,
    /// Over the budget: nothing is kept, and the table does not narrow.
    over: bool,
}

impl ValueDigests {
    /// Empty digests of column `col`.
    pub(crate) fn new(col: usize) -> ValueDigests {
        ValueDigests {
            col,
            keys: FxHashMap::default(),
            digests: Vec::new(),
            bytes: 0,
            over: false,
        }
    }

    /// Adds a row of hash `h` whose binary COPY fields are `fields`.
    pub(crate) fn add(&mut self, fields: &[u8], h: u128) {
        if self.over {
            return;
        }
        let Some(key) = field(fields, self.col) else {
            return;
        };
        if let Some(&ix) = self.keys.get(key) {
            self.digests[ix as usize].add(h);
            return;
        }
        self.bytes += KEY_BYTES + DIGEST_BYTES + key.len();
        let Ok(ix) = u32::try_from(self.digests.len()) else {
            return self.give_up();
        };
        if self.bytes > VALUE_BYTES {
            return self.give_up();
        }
        self.keys.insert(key.to_vec(), ix);
        let mut d = Digest::default();
        d.add(h);
        self.digests.push(d);
    }

    /// Frees everything: the column's values exceed the budget.
    fn give_up(&mut self) {
        *self = ValueDigests::new(self.col);
        self.over = true;
    }

    /// The digest of `key`'s rows.
    fn digest(&self, key: &[u8]) -> Digest {
        let ix = self.keys.get(key).map(|&ix| ix as usize);
        ix.and_then(|ix| self.digests.get(ix).copied())
            .unwrap_or_default()
    }
}

/// What narrows a differing period: the values of the narrowing column
/// whose digests differ in the table. A row that only one side has holds
/// one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Narrowing {
    /// The column's position in the row.
    pub(crate) col: usize,
    /// Its differing values.
    pub(crate) keys: HashSet<Key>,
    /// The rows of the mirror's table that hold them.
    pub(crate) mirror_rows: u64,
    /// The rows of the database's table that hold them.
    pub(crate) db_rows: u64,
}

impl Narrowing {
    /// The narrowing of the table from both sides' value digests, when it
    /// names at most [`MAX_KEYS`] values.
    pub(crate) fn of(mine: &ValueDigests, theirs: &ValueDigests) -> Option<Narrowing> {
        if mine.over || theirs.over || mine.col != theirs.col {
            return None;
        }
        let mut keys = HashSet::new();
        let (mut mirror_rows, mut db_rows) = (0u64, 0u64);
        for key in mine.keys.keys().chain(theirs.keys.keys()) {
            let (a, b) = (mine.digest(key), theirs.digest(key));
            if a != b && keys.insert(key.clone()) {
                mirror_rows += a.rows;
                db_rows += b.rows;
                if keys.len() > MAX_KEYS {
                    return None;
                }
            }
        }
        (!keys.is_empty()).then_some(Narrowing {
            col: mine.col,
            keys,
            mirror_rows,
            db_rows,
        })
    }

    /// The rows of a period it is expected to read, both sides: each
    /// side's rows of the values, in the period's share of the side's
    /// table (`period`, `table`: the rows of each side).
    pub(crate) fn expected_rows(&self, period: (u64, u64), table: (u64, u64)) -> u64 {
        let share = |rows: u64, part: u64, whole: u64| -> u64 {
            let r = u128::from(rows) * u128::from(part);
            u64::try_from(r.div_ceil(u128::from(whole.max(1)))).unwrap_or(u64::MAX)
        };
        share(self.mirror_rows, period.0, table.0).saturating_add(share(
            self.db_rows,
            period.1,
            table.1,
        ))
    }

    /// Whether the row with these binary COPY fields is one the narrowing
    /// holds.
    pub(crate) fn holds(&self, fields: &[u8]) -> bool {
        field(fields, self.col).is_some_and(|k| self.keys.contains(k))
    }
}

/// Field `c` (length prefix included) of a row's binary COPY fields.
pub(crate) fn field(fields: &[u8], c: usize) -> Option<&[u8]> {
    let mut at = 0usize;
    for i in 0..=c {
        let head = fields.get(at..at.checked_add(4)?)?;
        let len = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let end = at + 4 + usize::try_from(len).unwrap_or(0);
        if i == c {
            return fields.get(at..end);
        }
        at = end;
    }
    None
}

/// A key's value (`None`: NULL).
pub(crate) fn key_value(key: &[u8]) -> Option<&[u8]> {
    match key.get(..4) {
        Some(head) if i32::from_be_bytes([head[0], head[1], head[2], head[3]]) >= 0 => key.get(4..),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut out = Vec::new();
        for v in values {
            match v {
                Some(b) => {
                    out.extend_from_slice(&i32::try_from(b.len()).unwrap_or(0).to_be_bytes());
                    out.extend_from_slice(b);
                }
                None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        out
    }

    fn digests(rows: &[Vec<u8>], col: usize) -> ValueDigests {
        let mut d = ValueDigests::new(col);
        for r in rows {
            d.add(r, crate::reconcile::row_hash(r));
        }
        d
    }

    #[test]
    fn fields_by_position_null_and_empty_included() {
        let r = row(&[Some(b"101"), None, Some(b"")]);
        assert_eq!(field(&r, 0), Some(&r[0..7]));
        assert_eq!(field(&r, 1), Some(&r[7..11]));
        assert_eq!(field(&r, 2), Some(&r[11..15]));
        assert_eq!(field(&r, 3), None);
        assert_eq!(field(&r[..5], 0), None, "a truncated field");
        assert_eq!(key_value(&r[0..7]), Some(&b"101"[..]));
        assert_eq!(key_value(&r[7..11]), None);
        assert_eq!(key_value(&r[11..15]), Some(&b""[..]));
    }

    #[test]
    fn an_edited_value_narrows_to_its_code() {
        // Columns: omrade, kon, indhold; narrowing on omrade.
        let mut mirror = Vec::new();
        for o in [b"101", b"147", b"151"] {
            for k in [b"1", b"2"] {
                mirror.push(row(&[Some(o), Some(k), Some(b"7")]));
            }
        }
        let mut db = mirror.clone();
        db[3] = row(&[Some(b"147"), Some(b"2"), Some(b"8")]);
        let n = Narrowing::of(&digests(&mirror, 0), &digests(&db, 0));
        let n = n.expect("one edited row narrows");
        assert_eq!((n.mirror_rows, n.db_rows), (2, 2), "the rows of 147");
        let held: Vec<bool> = db.iter().map(|r| n.holds(r)).collect();
        assert_eq!(held, vec![false, false, true, true, false, false]);
        assert!(n.holds(&mirror[3]), "the mirror's original row too");
        // A period of half the table's rows is expected to hold half.
        assert_eq!(n.expected_rows((3, 3), (6, 6)), 2);
    }

    #[test]
    fn a_value_only_one_side_has_and_a_null_narrow() {
        let mirror = vec![row(&[Some(b"101"), Some(b"7")])];
        let db = vec![
            row(&[Some(b"101"), Some(b"7")]),
            row(&[None, Some(b"7")]),
            row(&[Some(b"999"), Some(b"7")]),
        ];
        let n = Narrowing::of(&digests(&mirror, 0), &digests(&db, 0)).expect("narrows");
        let mut keys: Vec<Option<&[u8]>> = n.keys.iter().map(|k| key_value(k)).collect();
        keys.sort();
        assert_eq!(keys, vec![None, Some(&b"999"[..])]);
        assert!(Narrowing::of(&digests(&mirror, 0), &digests(&mirror, 0)).is_none());
    }

    #[test]
    fn a_column_over_the_budget_does_not_narrow_and_frees_its_digests() {
        // About 1,260 values of 4 bytes fit in 128 KiB; 2,000 do not.
        let rows = |n: u32| -> Vec<Vec<u8>> {
            (0..n)
                .map(|i| row(&[Some(&i.to_be_bytes()), Some(b"x")]))
                .collect()
        };
        let d = digests(&rows(1000), 0);
        assert!(!d.over && d.bytes <= VALUE_BYTES);
        let d = digests(&rows(2000), 0);
        assert!(d.over);
        assert!(d.keys.is_empty() && d.digests.is_empty());
        assert!(Narrowing::of(&d, &digests(&rows(1), 0)).is_none());
    }

    #[test]
    fn too_many_differing_values_do_not_narrow() {
        let mirror: Vec<Vec<u8>> = (0..100u32)
            .map(|i| row(&[Some(&i.to_be_bytes()), Some(b"1")]))
            .collect();
        let db: Vec<Vec<u8>> = (0..100u32)
            .map(|i| row(&[Some(&i.to_be_bytes()), Some(b"2")]))
            .collect();
        assert!(Narrowing::of(&digests(&mirror, 0), &digests(&db, 0)).is_none());
        let few: Vec<Vec<u8>> = mirror
            .iter()
            .enumerate()
            .map(|(i, r)| {
                if i < MAX_KEYS {
                    db[i].clone()
                } else {
                    r.clone()
                }
            })
            .collect();
        let n = Narrowing::of(&digests(&mirror, 0), &digests(&few, 0));
        assert_eq!(n.map(|n| n.keys.len()), Some(MAX_KEYS));
    }
}
