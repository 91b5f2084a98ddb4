//! Narrowing a differing period of the reconcile to the rows that can
//! differ, by value.
//!
//! Besides its hash buckets, each side digests every period once more per
//! value of a narrowing column: the code column with the most values (by
//! the cached tableinfo). A row that only one side has changes the digest
//! of its own value, so the rows that differ all lie where that column
//! holds one of its differing values: `alder IN ('35')`. That is a
//! predicate the server evaluates with the table's indexes, so the
//! row-level diff of one edited row reads a small share of its period
//! instead of all of it again. One column, because each value digest costs
//! every one of the millions of rows a lookup on both sides.
//!
//! Each side keeps its column's values once (a value's index is its place
//! in every period's digests) and, per period, one 24-byte digest per
//! value: 127 values over 10 periods are 30 KB. The digests are a fixed
//! budget a side ([`VALUE_DIGESTS`]); a table whose values and periods
//! exceed it does not narrow, and a differing period is read by bucket.

use std::collections::HashSet;

use rustc_hash::FxHashMap;

use crate::reconcile::Digest;

/// Value digests (24 bytes each) a side keeps at most over a table's
/// periods, a value itself counted as three: 384 KiB. 127 values narrow a
/// table of up to 126 periods.
const VALUE_DIGESTS: usize = 16_384;

/// Differing values of one column that still narrow (each is a literal in
/// the predicate).
const MAX_KEYS: usize = 64;

/// Rows (of both sides) a narrowed diff reads at most; above it reading
/// the period's differing buckets costs about the same.
const NARROW_ROWS: u64 = 65_536;

/// A row's field as sent in a binary COPY: its 4-byte length (`-1`:
/// NULL) and its bytes.
pub(crate) type Key = Vec<u8>;

/// One side's digests of each period's rows per value of the narrowing
/// column.
#[derive(Debug, Clone)]
pub(crate) struct ValueDigests {
    /// The column's position in the row.
    col: usize,
    /// Each value seen → its index in every period's digests.
    keys: FxHashMap<Key, u32>,
    /// Per period, the digest of each value by index (as long as the
    /// period's highest index).
    periods: Vec<Vec<Digest>>,
    /// Digests allocated over all periods.
    held: usize,
    /// Over the budget: nothing is kept, and the table does not narrow.
    over: bool,
}

impl ValueDigests {
    /// Empty digests of column `col` over `periods` periods.
    pub(crate) fn new(col: usize, periods: usize) -> ValueDigests {
        ValueDigests {
            col,
            keys: FxHashMap::default(),
            periods: vec![Vec::new(); periods],
            held: 0,
            over: false,
        }
    }

    /// Adds a row of period `p`, of hash `h`, whose binary COPY fields are
    /// `fields`.
    pub(crate) fn add(&mut self, p: usize, fields: &[u8], h: u128) {
        if self.over {
            return;
        }
        let Some(key) = field(fields, self.col) else {
            return;
        };
        let ix = match self.keys.get(key) {
            Some(&ix) => ix as usize,
            None => {
                let ix = self.keys.len();
                self.keys
                    .insert(key.to_vec(), u32::try_from(ix).unwrap_or(u32::MAX));
                ix
            }
        };
        let Some(digests) = self.periods.get_mut(p) else {
            return;
        };
        if ix >= digests.len() {
            // At least every value known so far: a period's values mostly
            // recur in the next.
            let len = self.keys.len();
            self.held += len - digests.len();
            if self.held + 3 * len > VALUE_DIGESTS {
                self.give_up();
                return;
            }
            digests.reserve_exact(len - digests.len());
            digests.resize(len, Digest::default());
        }
        digests[ix].add(h);
    }

    /// Frees everything: the table's values and periods exceed the budget.
    fn give_up(&mut self) {
        let periods = self.periods.len();
        *self = ValueDigests::new(self.col, periods);
        self.over = true;
    }

    /// The digest of `key` in period `p`.
    fn digest(&self, p: usize, key: &[u8]) -> Digest {
        let ix = self.keys.get(key).map(|&ix| ix as usize);
        ix.and_then(|ix| self.periods.get(p)?.get(ix).copied())
            .unwrap_or_default()
    }
}

/// What narrows a differing period: the values of the narrowing column
/// whose digests differ. A row that only one side has holds one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Narrowing {
    /// The column's position in the row.
    pub(crate) col: usize,
    /// Its differing values.
    pub(crate) keys: HashSet<Key>,
    /// The rows of both sides that hold them.
    pub(crate) rows: u64,
}

impl Narrowing {
    /// The narrowing of period `p` from both sides' value digests, when it
    /// names at most [`MAX_KEYS`] values holding at most [`NARROW_ROWS`]
    /// rows of the two sides.
    pub(crate) fn of(mine: &ValueDigests, theirs: &ValueDigests, p: usize) -> Option<Narrowing> {
        if mine.over || theirs.over || mine.col != theirs.col {
            return None;
        }
        let mut keys = HashSet::new();
        let mut rows = 0u64;
        for key in mine.keys.keys().chain(theirs.keys.keys()) {
            let (a, b) = (mine.digest(p, key), theirs.digest(p, key));
            if a != b && keys.insert(key.clone()) {
                rows += a.rows + b.rows;
                if keys.len() > MAX_KEYS {
                    return None;
                }
            }
        }
        (!keys.is_empty() && rows <= NARROW_ROWS).then_some(Narrowing {
            col: mine.col,
            keys,
            rows,
        })
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
        let mut d = ValueDigests::new(col, 1);
        for r in rows {
            d.add(0, r, crate::reconcile::row_hash(r));
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
        let n = Narrowing::of(&digests(&mirror, 0), &digests(&db, 0), 0);
        let n = n.expect("one edited row narrows");
        assert_eq!(n.rows, 4, "the two rows of 147 on each side");
        let held: Vec<bool> = db.iter().map(|r| n.holds(r)).collect();
        assert_eq!(held, vec![false, false, true, true, false, false]);
        assert!(n.holds(&mirror[3]), "the mirror's original row too");
    }

    #[test]
    fn a_value_only_one_side_has_and_a_null_narrow() {
        let mirror = vec![row(&[Some(b"101"), Some(b"7")])];
        let db = vec![
            row(&[Some(b"101"), Some(b"7")]),
            row(&[None, Some(b"7")]),
            row(&[Some(b"999"), Some(b"7")]),
        ];
        let n = Narrowing::of(&digests(&mirror, 0), &digests(&db, 0), 0).expect("narrows");
        let mut keys: Vec<Option<&[u8]>> = n.keys.iter().map(|k| key_value(k)).collect();
        keys.sort();
        assert_eq!(keys, vec![None, Some(&b"999"[..])]);
        assert!(Narrowing::of(&digests(&mirror, 0), &digests(&mirror, 0), 0).is_none());
    }

    #[test]
    fn the_same_value_in_other_periods_keeps_one_index() {
        let mut d = ValueDigests::new(0, 3);
        for p in 0..3 {
            for v in [b"a", b"b", b"c"] {
                let r = row(&[Some(v), Some(b"1")]);
                d.add(p, &r, crate::reconcile::row_hash(&r));
            }
        }
        assert_eq!(d.keys.len(), 3);
        assert!(d.periods.iter().all(|p| p.len() == 3));
        assert_eq!(d.held, 9);
        assert_eq!(d.digest(1, &row(&[Some(b"b")])).rows, 1);
    }

    #[test]
    fn a_table_over_the_budget_does_not_narrow_and_frees_its_digests() {
        let periods = 200;
        let mut d = ValueDigests::new(0, periods);
        // 100 values in each of 200 periods: 20,000 digests > 16,384.
        for p in 0..periods {
            for i in 0..100u32 {
                let r = row(&[Some(&i.to_be_bytes()), Some(b"x")]);
                d.add(p, &r, crate::reconcile::row_hash(&r));
                assert!(d.held + 3 * d.keys.len() <= VALUE_DIGESTS);
            }
        }
        assert!(d.over);
        assert!(d.keys.is_empty() && d.periods.iter().all(Vec::is_empty));
        let small = ValueDigests::new(0, periods);
        assert!(Narrowing::of(&d, &small, 0).is_none());
    }

    #[test]
    fn too_many_differing_values_do_not_narrow() {
        let mirror: Vec<Vec<u8>> = (0..100u32)
            .map(|i| row(&[Some(&i.to_be_bytes()), Some(b"1")]))
            .collect();
        let db: Vec<Vec<u8>> = (0..100u32)
            .map(|i| row(&[Some(&i.to_be_bytes()), Some(b"2")]))
            .collect();
        assert!(Narrowing::of(&digests(&mirror, 0), &digests(&db, 0), 0).is_none());
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
        let n = Narrowing::of(&digests(&mirror, 0), &digests(&few, 0), 0);
        assert_eq!(n.map(|n| n.keys.len()), Some(MAX_KEYS));
    }
}
