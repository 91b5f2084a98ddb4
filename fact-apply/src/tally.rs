//! The row-level diff's count: which rows of a differing period only one
//! side has, by hash, in bounded memory whatever the damage.
//!
//! Both sides' row hashes are counted in memory while they are few (one
//! edited row, a narrowed read). Past [`IN_MEMORY`] distinct hashes — a
//! period restored from an old copy, every figure revised — the counter
//! spills: each hash goes to one of up to [`MAX_SPILLS`] temporary files
//! by a hash of it, and each file is counted on its own afterwards, by
//! sorting its records; a file too large for that is split again the same
//! way (by another hash, up to [`MAX_LEVEL`] times). So every row of both
//! sides is read once, whatever the period's size, and memory holds at
//! most [`LOAD_RECORDS`] records at a time (17 bytes a row, on disk in
//! the system's temporary folder, deleted when the count ends; at most
//! `MAX_SPILLS` files open a level).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};

use rustc_hash::FxHashMap;
use sync_state::EXAMPLE_ROWS;

/// Distinct hashes counted in memory (a table of 8 Ki entries of 24
/// bytes, 200 KiB); past it the counter spills.
const IN_MEMORY: usize = 4096;

/// Records a spill file aims at.
const SPILL_RECORDS: u64 = 8192;

/// Records of one spill file counted in memory at most (272 KiB); a
/// larger file is split again.
const LOAD_RECORDS: u64 = 16_384;

/// Spill files a level at most (each buffers [`SPILL_BUFFER`] bytes while
/// written, 64 KiB in all): up to 256 Ki rows each file holds about
/// [`SPILL_RECORDS`] records; past 512 Ki, a file is split again.
const MAX_SPILLS: usize = 32;

/// At least this many spill files.
const MIN_SPILLS: usize = 16;

/// Times a spill file is split again at most (a file of one hash repeated
/// cannot be split: it is counted as it is).
const MAX_LEVEL: u64 = 3;

/// Write buffer of each spill file.
const SPILL_BUFFER: usize = 2048;

/// A spilled hash: its 16 bytes and the side's byte.
const RECORD: usize = 17;

/// Which side a row is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The mirror's partitions.
    Mirror,
    /// The fact table.
    Db,
}

/// A hash's rows on each side.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Count {
    /// Rows of the mirror.
    pub(crate) mirror: u32,
    /// Rows of the fact table.
    pub(crate) db: u32,
}

impl Count {
    fn add(&mut self, side: Side) {
        match side {
            Side::Mirror => self.mirror = self.mirror.saturating_add(1),
            Side::Db => self.db = self.db.saturating_add(1),
        }
    }
}

/// A hash as a map key (two halves: 8-byte aligned, 24 bytes an entry
/// with its count).
type Key = (u64, u64);

fn key(h: u128) -> Key {
    (h as u64, (h >> 64) as u64)
}

fn unkey((lo, hi): Key) -> u128 {
    (u128::from(hi) << 64) | u128::from(lo)
}

/// What the count found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Rows only the mirror has (a hash's surplus over the database's).
    pub(crate) only_in_mirror: u64,
    /// Rows only the database has.
    pub(crate) only_in_db: u64,
    /// The smallest hashes of rows only the mirror has (the examples).
    pub(crate) ex_mirror: BTreeSet<u128>,
    /// The smallest hashes of rows only the database has.
    pub(crate) ex_db: BTreeSet<u128>,
}

impl Tally {
    fn add(&mut self, h: u128, c: Count) {
        if c.mirror > c.db {
            self.only_in_mirror += u64::from(c.mirror - c.db);
            keep_smallest(&mut self.ex_mirror, h);
        } else if c.db > c.mirror {
            self.only_in_db += u64::from(c.db - c.mirror);
            keep_smallest(&mut self.ex_db, h);
        }
    }
}

/// Keeps `h` if it is among the [`EXAMPLE_ROWS`] smallest.
fn keep_smallest(kept: &mut BTreeSet<u128>, h: u128) {
    kept.insert(h);
    if kept.len() > EXAMPLE_ROWS {
        kept.pop_last();
    }
}

/// Both sides' hashes of one differing period, counted: in memory, or
/// spilled by hash. An I/O error is kept and returned by
/// [`Counter::finish`] (the rows' callbacks cannot fail).
pub(crate) struct Counter {
    counts: FxHashMap<Key, Count>,
    spills: Option<Spills>,
    /// The spill files a spill makes (from the rows expected).
    spill_files: usize,
    error: Option<io::Error>,
}

impl Counter {
    /// A counter for about `rows` rows of both sides.
    pub(crate) fn new(rows: u64) -> Counter {
        // Sized once: a table that grows holds its old one beside it.
        let expected = usize::try_from(rows).unwrap_or(IN_MEMORY).min(IN_MEMORY);
        Counter {
            counts: FxHashMap::with_capacity_and_hasher(expected, Default::default()),
            spills: None,
            spill_files: files_for(rows),
            error: None,
        }
    }

    /// Counts a row of hash `h` of `side`.
    pub(crate) fn add(&mut self, h: u128, side: Side) {
        if self.error.is_some() {
            return;
        }
        if let Some(spills) = &mut self.spills {
            if let Err(e) = spills.write(&record(h, side)) {
                self.error = Some(e);
            }
            return;
        }
        self.counts.entry(key(h)).or_default().add(side);
        if self.counts.len() > IN_MEMORY {
            if let Err(e) = self.start_spilling() {
                self.error = Some(e);
            }
        }
    }

    /// The rows of `h` counted so far, while the count is in memory.
    pub(crate) fn in_memory(&self, h: u128) -> Option<Count> {
        match self.spills {
            None => Some(self.counts.get(&key(h)).copied().unwrap_or_default()),
            Some(_) => None,
        }
    }

    /// Whether the count has spilled (rows kept while reading then miss
    /// some; the examples are read again).
    pub(crate) fn spilled(&self) -> bool {
        self.spills.is_some()
    }

    /// Moves the counts to spill files; every later row goes there too.
    fn start_spilling(&mut self) -> io::Result<()> {
        let mut spills = Spills::new(self.spill_files, 0)?;
        for (k, c) in std::mem::take(&mut self.counts) {
            for (side, n) in [(Side::Mirror, c.mirror), (Side::Db, c.db)] {
                let r = record(unkey(k), side);
                for _ in 0..n {
                    spills.write(&r)?;
                }
            }
        }
        self.spills = Some(spills);
        Ok(())
    }

    /// The rows only one side has, and their smallest hashes.
    pub(crate) fn finish(self) -> io::Result<Tally> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let mut tally = Tally::default();
        for (k, c) in self.counts {
            tally.add(unkey(k), c);
        }
        if let Some(spills) = self.spills {
            spills.count(&mut Vec::new(), &mut tally)?;
        }
        Ok(tally)
    }
}

/// A spilled row: its hash's 16 bytes and its side's byte.
fn record(h: u128, side: Side) -> [u8; RECORD] {
    let mut r = [0u8; RECORD];
    r[..16].copy_from_slice(&h.to_le_bytes());
    r[16] = u8::from(side == Side::Db);
    r
}

/// Spill files for about `records` records.
fn files_for(records: u64) -> usize {
    let files = usize::try_from(records.div_ceil(SPILL_RECORDS)).unwrap_or(MAX_SPILLS);
    files.clamp(MIN_SPILLS, MAX_SPILLS)
}

/// The spill files of one level: each record goes to one of them by a
/// hash of its hash, seeded by the level (so that a file split again
/// spreads over the next level's files).
struct Spills {
    files: Vec<BufWriter<File>>,
    level: u64,
}

impl Spills {
    fn new(files: usize, level: u64) -> io::Result<Spills> {
        let files = (0..files)
            .map(|_| {
                Ok(BufWriter::with_capacity(
                    SPILL_BUFFER,
                    tempfile::tempfile()?,
                ))
            })
            .collect::<io::Result<_>>()?;
        Ok(Spills { files, level })
    }

    fn write(&mut self, r: &[u8; RECORD]) -> io::Result<()> {
        let x = xxhash_rust::xxh3::xxh3_64_with_seed(&r[..16], self.level);
        let ix = ((u128::from(x) * self.files.len() as u128) >> 64) as usize;
        self.files[ix].write_all(r)
    }

    /// Counts each file into `tally`, one at a time (`records`: the
    /// buffer they are read into): sorted when it holds at most
    /// [`LOAD_RECORDS`] records, else split again.
    fn count(self, records: &mut Vec<[u8; RECORD]>, tally: &mut Tally) -> io::Result<()> {
        for w in self.files {
            let mut file = w.into_inner().map_err(io::IntoInnerError::into_error)?;
            let n = file.stream_position()? / RECORD as u64;
            file.rewind()?;
            let reader = BufReader::with_capacity(SPILL_BUFFER, file);
            if n > LOAD_RECORDS && self.level < MAX_LEVEL {
                let mut again = Spills::new(files_for(n), self.level + 1)?;
                each_record(reader, |r| again.write(r))?;
                again.count(records, tally)?;
            } else {
                records.clear();
                records.reserve_exact(usize::try_from(n).unwrap_or(0));
                each_record(reader, |r| {
                    records.push(*r);
                    Ok(())
                })?;
                count_sorted(records, tally);
            }
        }
        Ok(())
    }
}

/// Each record of a spill file.
fn each_record(
    mut reader: impl Read,
    mut f: impl FnMut(&[u8; RECORD]) -> io::Result<()>,
) -> io::Result<()> {
    let mut r = [0u8; RECORD];
    loop {
        match reader.read_exact(&mut r) {
            Ok(()) => f(&r)?,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// Adds spilled records to `tally`, each hash's once: sorted, a hash's
/// records are side by side.
fn count_sorted(records: &mut [[u8; RECORD]], tally: &mut Tally) {
    records.sort_unstable_by(|a, b| a[..16].cmp(&b[..16]));
    for run in records.chunk_by(|a, b| a[..16] == b[..16]) {
        let mut c = Count::default();
        for r in run {
            c.add(if r[16] == 1 { Side::Db } else { Side::Mirror });
        }
        let mut h = [0u8; 16];
        h.copy_from_slice(&run[0][..16]);
        tally.add(u128::from_le_bytes(h), c);
    }
}

/// Bytes of the mirror's rows a diff holds for its examples.
const HELD_BYTES: usize = 128 * 1024;

/// Rows (of both sides) a diff expects at most for the mirror's to be
/// held.
const HELD_ROWS: u64 = 4096;

/// The mirror's rows of a diff of at most [`HELD_ROWS`] rows (each its
/// hash, its length and its binary fields, back to back), held while they
/// fit in [`HELD_BYTES`] (one edited row's narrowed diff does), so that
/// the examples need no second read of the partition.
#[derive(Debug, Default)]
pub(crate) struct HeldRows {
    bytes: Vec<u8>,
    full: bool,
}

impl HeldRows {
    /// Rows held for a diff of about `rows` rows of both sides: none when
    /// they are many (the examples are then read again).
    pub(crate) fn for_rows(rows: u64) -> HeldRows {
        HeldRows {
            bytes: Vec::new(),
            full: rows > HELD_ROWS,
        }
    }

    /// Holds the row of hash `h` and binary fields `fields`, unless the
    /// rows no longer fit (then none is held).
    pub(crate) fn push(&mut self, h: u128, fields: &[u8]) {
        let fits = !self.full && self.bytes.len() + 20 + fields.len() <= HELD_BYTES;
        match u32::try_from(fields.len()) {
            Ok(len) if fits => {
                self.bytes.extend_from_slice(&h.to_le_bytes());
                self.bytes.extend_from_slice(&len.to_le_bytes());
                self.bytes.extend_from_slice(fields);
            }
            _ => {
                self.full = true;
                self.bytes = Vec::new();
            }
        }
    }

    /// The binary fields of the rows of `wanted`, or `None` when the rows
    /// did not all fit.
    pub(crate) fn find(&self, wanted: &BTreeSet<u128>) -> Option<BTreeMap<u128, Vec<u8>>> {
        if self.full {
            return None;
        }
        let mut out = BTreeMap::new();
        let mut rest = self.bytes.as_slice();
        while let (Some(h), Some(len)) = (rest.get(..16), rest.get(16..20)) {
            let h = u128::from_le_bytes(h.try_into().ok()?);
            let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
            let fields = rest.get(20..20 + len)?;
            if wanted.contains(&h) {
                out.entry(h).or_insert_with(|| fields.to_vec());
            }
            rest = &rest[20 + len..];
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hash(i: u64) -> u128 {
        xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes())
    }

    /// The count of the multisets `mirror` and `db` (row ids), about
    /// `hint` rows expected; and whether it spilled.
    fn count(mirror: &[u64], db: &[u64], hint: u64) -> (Tally, bool) {
        let mut c = Counter::new(hint);
        for &m in mirror {
            c.add(hash(m), Side::Mirror);
        }
        for &d in db {
            c.add(hash(d), Side::Db);
        }
        let spilled = c.spilled();
        (c.finish().expect("count"), spilled)
    }

    /// The same count by sorting (the reference).
    fn reference(mirror: &[u64], db: &[u64]) -> Tally {
        let mut counts: BTreeMap<u128, Count> = Default::default();
        for &m in mirror {
            counts.entry(hash(m)).or_default().add(Side::Mirror);
        }
        for &d in db {
            counts.entry(hash(d)).or_default().add(Side::Db);
        }
        let mut t = Tally::default();
        for (h, c) in counts {
            t.add(h, c);
        }
        t
    }

    proptest! {
        /// Whatever the rows, duplicates included, the count in memory is
        /// the reference's.
        #[test]
        fn counts_in_memory_are_exact(
            mirror in proptest::collection::vec(0u64..200, 0..300),
            db in proptest::collection::vec(0u64..200, 0..300),
        ) {
            let (t, spilled) = count(&mirror, &db, 0);
            prop_assert!(!spilled);
            prop_assert_eq!(t, reference(&mirror, &db));
        }
    }

    #[test]
    fn a_whole_period_revised_spills_and_counts_exactly() {
        // 20,000 rows a side, all different, a few duplicated and a few
        // the same on both sides: past the in-memory bound.
        let mut mirror: Vec<u64> = (0..20_000).collect();
        let mut db: Vec<u64> = (1_000_000..1_020_000).collect();
        mirror.extend([5, 5, 7]);
        db.extend([5, 42, 1_000_001]);
        for hint in [0, 40_000, u64::MAX] {
            let (t, spilled) = count(&mirror, &db, hint);
            assert!(spilled, "hint {hint}");
            let want = reference(&mirror, &db);
            // 5 and 42 are on both sides once.
            assert_eq!(t.only_in_mirror, 20_003 - 2);
            assert_eq!(t.only_in_db, 20_003 - 2);
            assert_eq!(t.ex_mirror.len(), EXAMPLE_ROWS);
            assert_eq!(t, want, "hint {hint}");
        }
    }

    #[test]
    fn equal_sides_leave_nothing() {
        let rows: Vec<u64> = (0..40_000).collect();
        let (t, spilled) = count(&rows, &rows, 80_000);
        assert!(spilled);
        assert_eq!((t.only_in_mirror, t.only_in_db), (0, 0));
        assert!(t.ex_mirror.is_empty() && t.ex_db.is_empty());
    }

    #[test]
    fn a_damage_past_the_files_is_split_again_and_counted_exactly() {
        // 600,000 rows in 16 files (the hint says few): 37,500 records a
        // file, over LOAD_RECORDS, so each is split again.
        let mirror: Vec<u64> = (0..300_000).collect();
        let mut db: Vec<u64> = (150_000..450_000).collect();
        db.extend([7, 7]);
        let (t, spilled) = count(&mirror, &db, 0);
        assert!(spilled);
        // 7 is in both once; the database's second 7 is its own.
        assert_eq!(t.only_in_mirror, 150_000 - 1);
        assert_eq!(t.only_in_db, 150_000 + 1);
        assert_eq!(t, reference(&mirror, &db));
    }

    #[test]
    fn one_row_repeated_past_every_split_is_counted() {
        let mirror = vec![1u64; 3];
        let mut db = vec![1u64; 70_000];
        db.extend(0..5000);
        let (t, spilled) = count(&mirror, &db, 0);
        assert!(spilled);
        assert_eq!(t, reference(&mirror, &db));
        assert_eq!(t.only_in_db, 70_000 + 5000 - 3);
    }

    #[test]
    fn held_rows_are_found_by_hash_until_they_no_longer_fit() {
        let mut held = HeldRows::default();
        let row = |i: u64| format!("row {i}").into_bytes();
        for i in 0..100 {
            held.push(hash(i), &row(i));
        }
        let wanted: BTreeSet<u128> = [hash(3), hash(97), hash(1_000)].into();
        let found = held.find(&wanted).expect("they fit");
        assert_eq!(found.len(), 2);
        assert_eq!(found[&hash(3)], row(3));
        assert_eq!(found[&hash(97)], row(97));
        let big = vec![7u8; HELD_BYTES];
        held.push(hash(200), &big);
        assert!(held.find(&wanted).is_none(), "past the budget none is held");
        assert!(held.bytes.capacity() == 0);
        held.push(hash(201), b"x");
        assert!(held.find(&wanted).is_none());
    }
}
