//! The tuples of a binary `COPY … TO STDOUT`, as raw bytes: the reconcile
//! hashes each row's fields exactly as the server sends them (length
//! prefix and value), which is how it hashes the rows the apply would
//! send, so a row needs no decoding to be compared.

use std::io::{self, BufRead};
use std::ops::Range;

/// The signature that opens a binary COPY stream.
const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// One tuple: its fields' bytes as sent (each a 4-byte big-endian length,
/// `-1` for NULL, then the value), and each field's value within them.
#[derive(Debug)]
pub(crate) struct Tuple<'a> {
    /// The fields, length-prefixed, as sent.
    pub(crate) fields: &'a [u8],
    /// Each field's value in `fields` (`None`: NULL).
    pub(crate) values: &'a [Option<Range<usize>>],
}

impl<'a> Tuple<'a> {
    /// Field `i`'s value (`None`: NULL or no such field).
    pub(crate) fn value(&self, i: usize) -> Option<&'a [u8]> {
        let r = self.values.get(i)?.clone()?;
        self.fields.get(r)
    }
}

fn invalid(reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason)
}

/// Calls `f` with every tuple of the binary COPY stream `r`, whose tuples
/// have `fields` fields each. Memory: one tuple (and the reader's chunk).
pub(crate) fn each_tuple<R: BufRead>(
    mut r: R,
    fields: usize,
    mut f: impl FnMut(&Tuple<'_>),
) -> io::Result<u64> {
    let mut tuples = Tuples::new(fields);
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Err(tuples.unterminated());
        }
        let n = chunk.len();
        let done = tuples.push(chunk, &mut f)?;
        r.consume(n);
        if done {
            return Ok(tuples.count);
        }
    }
}

/// A binary COPY stream parsed as its chunks arrive ([`Tuples::push`]),
/// for a reader that is handed chunks rather than asking for them.
pub(crate) struct Tuples {
    fields: usize,
    /// The unparsed end of the chunks so far (a tuple split across them).
    pending: Vec<u8>,
    header: bool,
    values: Vec<Option<Range<usize>>>,
    /// Tuples parsed so far.
    pub(crate) count: u64,
}

impl Tuples {
    /// A parser of tuples of `fields` fields each.
    pub(crate) fn new(fields: usize) -> Tuples {
        Tuples {
            fields,
            pending: Vec::new(),
            header: true,
            values: Vec::with_capacity(fields),
            count: 0,
        }
    }

    /// Calls `f` with every tuple `chunk` completes; `true` once the
    /// stream's trailer is read (what follows it is ignored).
    pub(crate) fn push(
        &mut self,
        chunk: &[u8],
        f: &mut impl FnMut(&Tuple<'_>),
    ) -> io::Result<bool> {
        if self.pending.is_empty() {
            // The common case: the chunk starts where a tuple starts.
            let (used, done) = self.parse(chunk, f)?;
            if !done {
                self.pending.extend_from_slice(&chunk[used..]);
            }
            return Ok(done);
        }
        let mut pending = std::mem::take(&mut self.pending);
        pending.extend_from_slice(chunk);
        let (used, done) = self.parse(&pending, f)?;
        pending.drain(..used);
        self.pending = pending;
        Ok(done)
    }

    /// The error of a stream that ended before its trailer.
    pub(crate) fn unterminated(&self) -> io::Error {
        invalid(format!(
            "the binary COPY ended after {} rows without its trailer",
            self.count
        ))
    }

    /// Parses the header (if due) and the whole tuples at the start of
    /// `b`: the bytes used, and whether the trailer was reached.
    fn parse(&mut self, b: &[u8], f: &mut impl FnMut(&Tuple<'_>)) -> io::Result<(usize, bool)> {
        let mut pos = 0;
        if self.header {
            match header_len(b)? {
                Some(len) => {
                    pos = len;
                    self.header = false;
                }
                None => return Ok((0, false)),
            }
        }
        loop {
            match tuple_at(&b[pos..], self.fields, &mut self.values)? {
                Parsed::Incomplete => return Ok((pos, false)),
                Parsed::Trailer => return Ok((pos, true)),
                Parsed::Tuple(len) => {
                    f(&Tuple {
                        fields: &b[pos + 2..pos + len],
                        values: &self.values,
                    });
                    self.count += 1;
                    pos += len;
                }
            }
        }
    }
}

/// The header's length, once `b` holds all of it.
fn header_len(b: &[u8]) -> io::Result<Option<usize>> {
    if b.len() < SIGNATURE.len() + 8 {
        return Ok(None);
    }
    if &b[..SIGNATURE.len()] != SIGNATURE {
        return Err(invalid(
            "the binary COPY does not start with its signature".into(),
        ));
    }
    let ext = u32::from_be_bytes([b[15], b[16], b[17], b[18]]) as usize;
    let len = SIGNATURE.len() + 8 + ext;
    Ok((b.len() >= len).then_some(len))
}

enum Parsed {
    /// `b` ends inside the tuple.
    Incomplete,
    /// The end of the stream.
    Trailer,
    /// A tuple of this many bytes (its field count included).
    Tuple(usize),
}

/// The tuple at the start of `b`; its fields' value ranges (relative to
/// the bytes after the field count) into `values`.
fn tuple_at(b: &[u8], fields: usize, values: &mut Vec<Option<Range<usize>>>) -> io::Result<Parsed> {
    let Some(count) = b.get(..2) else {
        return Ok(Parsed::Incomplete);
    };
    let count = i16::from_be_bytes([count[0], count[1]]);
    if count == -1 {
        return Ok(Parsed::Trailer);
    }
    if usize::try_from(count).ok() != Some(fields) {
        return Err(invalid(format!(
            "a row of the binary COPY has {count} fields, expected {fields}"
        )));
    }
    values.clear();
    let body = &b[2..];
    let mut pos = 0usize;
    for _ in 0..fields {
        let Some(len) = body.get(pos..pos + 4) else {
            return Ok(Parsed::Incomplete);
        };
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        pos += 4;
        if len < 0 {
            values.push(None);
            continue;
        }
        let end = pos + len as usize;
        if body.len() < end {
            return Ok(Parsed::Incomplete);
        }
        values.push(Some(pos..end));
        pos = end;
    }
    Ok(Parsed::Tuple(2 + pos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A binary COPY stream of `rows`, as the server writes it.
    fn stream(rows: &[Vec<Option<Vec<u8>>>], ext: &[u8]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend(0u32.to_be_bytes());
        out.extend((ext.len() as u32).to_be_bytes());
        out.extend(ext);
        for row in rows {
            out.extend((row.len() as i16).to_be_bytes());
            for f in row {
                match f {
                    Some(v) => {
                        out.extend((v.len() as i32).to_be_bytes());
                        out.extend(v);
                    }
                    None => out.extend((-1i32).to_be_bytes()),
                }
            }
        }
        out.extend((-1i16).to_be_bytes());
        out
    }

    /// A reader that hands out `b` in chunks of the given sizes.
    struct Chunks {
        b: Vec<u8>,
        pos: usize,
        sizes: Vec<usize>,
        k: usize,
    }

    impl io::Read for Chunks {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.fill_buf()?.len().min(out.len());
            out[..n].copy_from_slice(&self.b[self.pos..self.pos + n]);
            self.consume(n);
            Ok(n)
        }
    }

    impl BufRead for Chunks {
        fn fill_buf(&mut self) -> io::Result<&[u8]> {
            let size = self.sizes[self.k % self.sizes.len()].max(1);
            let end = (self.pos + size).min(self.b.len());
            Ok(&self.b[self.pos..end])
        }
        fn consume(&mut self, n: usize) {
            self.pos += n;
            self.k += 1;
        }
    }

    fn field() -> impl Strategy<Value = Option<Vec<u8>>> {
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..12))
    }

    proptest! {
        /// Whatever the chunking, every row comes back with its values, and
        /// its first fields are the bytes that were sent.
        #[test]
        fn tuples_survive_any_chunking(
            rows in proptest::collection::vec(proptest::collection::vec(field(), 3), 0..40),
            ext in proptest::collection::vec(any::<u8>(), 0..4),
            sizes in proptest::collection::vec(1usize..50, 1..6),
        ) {
            let b = stream(&rows, &ext);
            let mut got = Vec::new();
            let n = each_tuple(Chunks { b, pos: 0, sizes, k: 0 }, 3, |t| {
                let vals: Vec<Option<Vec<u8>>> = (0..3).map(|i| t.value(i).map(<[u8]>::to_vec)).collect();
                got.push((vals, t.fields.to_vec()));
            }).expect("parses");
            prop_assert_eq!(n as usize, rows.len());
            for (row, (vals, sent)) in rows.iter().zip(&got) {
                prop_assert_eq!(row, vals);
                let mut want = Vec::new();
                for f in row {
                    match f {
                        Some(v) => { want.extend((v.len() as i32).to_be_bytes()); want.extend(v); }
                        None => want.extend((-1i32).to_be_bytes()),
                    }
                }
                prop_assert_eq!(&want, sent);
            }
        }
    }

    #[test]
    fn a_truncated_stream_or_a_wrong_width_is_an_error() {
        let rows = vec![vec![Some(b"a".to_vec()), None]];
        let mut b = stream(&rows, &[]);
        b.truncate(b.len() - 2);
        let e = each_tuple(&b[..], 2, |_| {}).expect_err("no trailer");
        assert!(e.to_string().contains("without its trailer"), "{e}");
        let b = stream(&rows, &[]);
        let e = each_tuple(&b[..], 3, |_| {}).expect_err("width");
        assert!(e.to_string().contains("has 2 fields, expected 3"), "{e}");
        let e = each_tuple(&b"PGCOPY\nxxxxxxxxxxxxxxxx"[..], 2, |_| {}).expect_err("signature");
        assert!(e.to_string().contains("signature"), "{e}");
    }
}
