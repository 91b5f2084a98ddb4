//! Value-expression resolution and the streaming BULK generator.

use bytes::Bytes;

use super::world::{EmuTable, EmuValue};

/// Target size of one body chunk.
pub(crate) const CHUNK: usize = 64 * 1024;

/// An API error (HTTP status + `errorTypeCode` + message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub(crate) fn bad_request(code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// The compact JSON body `{"errorTypeCode":…,"message":…}`.
    pub(crate) fn body(&self) -> String {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            #[serde(rename = "errorTypeCode")]
            code: &'a str,
            message: &'a str,
        }
        serde_json::to_string(&Body {
            code: &self.code,
            message: &self.message,
        })
        .unwrap_or_default()
    }
}

/// `*` glob match (any number of `*`, anywhere), ASCII-case-insensitive.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().flat_map(char::to_uppercase).collect();
    let t: Vec<char> = text.chars().flat_map(char::to_uppercase).collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

fn not_found_value(expr: &str, var_id: &str) -> ApiError {
    ApiError::bad_request(
        "EXTRACT-NOTFOUND",
        format!("Kan ikke finde værdien: {expr} ({var_id})"),
    )
}

/// Parses `(N)` / `(-n+N)` into N.
fn parse_newest(expr: &str) -> Option<usize> {
    let inner = expr.strip_prefix('(')?.strip_suffix(')')?.trim();
    let num = inner
        .strip_prefix("-n+")
        .or_else(|| inner.strip_prefix("-N+"))
        .unwrap_or(inner)
        .trim();
    num.parse().ok()
}

/// Parses `>=A<=B`, `>A`, `<B`, … into a list of (op, operand).
fn parse_range(expr: &str) -> Option<Vec<(&str, &str)>> {
    let mut out = Vec::new();
    let mut rest = expr;
    while !rest.is_empty() {
        let op = [">=", "<=", ">", "<"]
            .into_iter()
            .find(|op| rest.starts_with(op))?;
        rest = &rest[op.len()..];
        let end = rest.find(['<', '>']).unwrap_or(rest.len());
        let operand = rest[..end].trim();
        if operand.is_empty() {
            return None;
        }
        out.push((op, operand));
        rest = &rest[end..];
    }
    (!out.is_empty()).then_some(out)
}

/// Resolves the value expressions of one variable to indices into `values`
/// (table order). Supports exact codes (case-insensitive fallback), `*`,
/// wildcards (`2023*`, `*K1`, `1*0`), newest-N (`(1)`, `(-n+5)`) and ranges
/// (`>=2023K1<=2024K2`). Indices come back deduplicated, in table order.
pub(crate) fn resolve_values(
    values: &[EmuValue],
    exprs: &[String],
    var_id: &str,
) -> Result<Vec<usize>, ApiError> {
    let mut hit = vec![false; values.len()];
    for expr in exprs {
        let expr = expr.trim();
        if expr == "*" {
            hit.iter_mut().for_each(|h| *h = true);
            continue;
        }
        if let Some(exact) = values.iter().position(|v| v.id == expr) {
            hit[exact] = true;
            continue;
        }
        let mut any = false;
        if expr.contains('*') {
            for (i, v) in values.iter().enumerate() {
                if glob_match(expr, &v.id) {
                    hit[i] = true;
                    any = true;
                }
            }
        } else if let Some(n) = parse_newest(expr) {
            let start = values.len().saturating_sub(n);
            for h in &mut hit[start..] {
                *h = true;
                any = true;
            }
        } else if let Some(bounds) = parse_range(expr) {
            let pos_of = |code: &str| values.iter().position(|v| v.id.eq_ignore_ascii_case(code));
            for (i, v) in values.iter().enumerate() {
                let ok = bounds.iter().all(|(op, operand)| {
                    // Compare by position when the bound is a known value,
                    // else by code as strings.
                    let ord = match pos_of(operand) {
                        Some(p) => i.cmp(&p),
                        None => v.id.as_str().cmp(operand),
                    };
                    match *op {
                        ">=" => ord.is_ge(),
                        "<=" => ord.is_le(),
                        ">" => ord.is_gt(),
                        _ => ord.is_lt(),
                    }
                });
                if ok {
                    hit[i] = true;
                    any = true;
                }
            }
        } else {
            let upper = expr.to_uppercase();
            if let Some(i) = values.iter().position(|v| v.id.to_uppercase() == upper) {
                hit[i] = true;
                any = true;
            }
        }
        if !any {
            return Err(not_found_value(expr, var_id));
        }
    }
    Ok(hit
        .iter()
        .enumerate()
        .filter(|(_, h)| **h)
        .map(|(i, _)| i)
        .collect())
}

/// One output column, in request order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Column {
    /// The time column.
    Time,
    /// Non-time variable, index into [`BulkSpec::vars`].
    Var(usize),
}

/// A selected value of a non-time variable.
#[derive(Clone, Debug)]
pub(crate) struct SelValue {
    /// Code or text, followed by `;`.
    pub bytes: Vec<u8>,
    /// `table_value_index * stride`: this value's contribution to the cell index.
    pub offset: u64,
}

/// A non-time variable's selection, values ordered by code as strings.
#[derive(Clone, Debug)]
pub(crate) struct VarSel {
    pub values: Vec<SelValue>,
}

/// A selected period.
#[derive(Clone, Debug)]
pub(crate) struct PeriodSel {
    /// Code or text, followed by `;`.
    pub bytes: Vec<u8>,
    /// Hash of (table seed, period code).
    pub hash: u64,
    pub revision: u32,
}

/// Everything needed to stream one BULK answer.
#[derive(Clone, Debug)]
pub(crate) struct BulkSpec {
    /// Header line including CRLF.
    pub header: Vec<u8>,
    pub columns: Vec<Column>,
    pub vars: Vec<VarSel>,
    /// Periods ascending by code.
    pub periods: Vec<PeriodSel>,
    pub density: f64,
    pub missing_rate: f64,
    pub decimals: u8,
    pub decimal_sep: u8,
    /// Emit periods round-robin (time innermost) instead of time outermost.
    pub interleave: bool,
}

/// A validated selection of one table, before presentation choices.
pub(crate) struct Selection {
    /// Request-order columns: `None` = time, `Some(k)` = table variable k.
    pub columns: Vec<Option<usize>>,
    /// Selected value indices per table variable (table order).
    pub var_values: Vec<Vec<usize>>,
    /// Selected time value indices.
    pub time_values: Vec<usize>,
}

impl Selection {
    /// Number of cells the selection spans.
    pub(crate) fn cells(&self) -> u128 {
        self.var_values
            .iter()
            .map(|v| v.len() as u128)
            .product::<u128>()
            .saturating_mul(self.time_values.len() as u128)
    }
}

/// Checks a data request's `variables` against a table and resolves values.
/// `requested` is (code, value expressions) in request order.
pub(crate) fn select(
    table: &EmuTable,
    requested: &[(String, Vec<String>)],
) -> Result<Selection, ApiError> {
    let mut columns: Vec<Option<usize>> = Vec::new();
    let mut var_values: Vec<Option<Vec<usize>>> = vec![None; table.variables.len()];
    let mut time_values: Option<Vec<usize>> = None;
    for (code, exprs) in requested {
        let upper = code.trim().to_uppercase();
        let target = if upper == "TID" {
            None
        } else if let Some(k) = table
            .variables
            .iter()
            .position(|v| v.id.to_uppercase() == upper)
        {
            Some(k)
        } else {
            return Err(ApiError::bad_request(
                "EXTRACT-NOTFOUND",
                format!("Kan ikke finde variablen: {code}"),
            ));
        };
        if exprs.is_empty() {
            continue;
        }
        let (values, var_id) = match target {
            None => (&table.time_values, "Tid"),
            Some(k) => (&table.variables[k].values, table.variables[k].id.as_str()),
        };
        let resolved = resolve_values(values, exprs, var_id)?;
        let slot = match target {
            None => &mut time_values,
            Some(k) => &mut var_values[k],
        };
        match slot {
            Some(existing) => {
                existing.extend(resolved);
                existing.sort_unstable();
                existing.dedup();
            }
            None => {
                *slot = Some(resolved);
                columns.push(target);
            }
        }
    }
    let mut out_vars = Vec::with_capacity(var_values.len());
    for (k, sel) in var_values.into_iter().enumerate() {
        match sel {
            Some(s) => out_vars.push(s),
            None => {
                return Err(ApiError::bad_request(
                    "EXTRACT-NOTALLOWED",
                    format!(
                        "Der skal vælges værdier for variabel: {}",
                        table.variables[k].id
                    ),
                ))
            }
        }
    }
    let Some(time_values) = time_values else {
        return Err(ApiError::bad_request(
            "EXTRACT-NOTALLOWED",
            "Der skal vælges værdier for variabel: Tid",
        ));
    };
    Ok(Selection {
        columns,
        var_values: out_vars,
        time_values,
    })
}

/// Presentation choices for [`build_spec`].
pub(crate) struct Presentation {
    pub codes: bool,
    pub english: bool,
    pub interleave: bool,
}

/// Turns a validated selection into a [`BulkSpec`]: the header and the
/// variable columns, then the periods.
pub(crate) fn build_spec(table: &EmuTable, sel: &Selection, p: &Presentation) -> BulkSpec {
    let (header, columns, vars) = spec_columns(table, sel, p);
    BulkSpec {
        header,
        columns,
        vars,
        periods: spec_periods(table, sel, p),
        density: table.density,
        missing_rate: table.missing_rate,
        decimals: table.decimals.min(9),
        decimal_sep: if p.english { b'.' } else { b',' },
        interleave: p.interleave,
    }
}

/// Strides of the full (non-time) cube in table order, last fastest.
fn strides(table: &EmuTable) -> Vec<u64> {
    let n = table.variables.len();
    let mut strides = vec![1u64; n];
    for k in (0..n.saturating_sub(1)).rev() {
        strides[k] = strides[k + 1].saturating_mul(table.variables[k + 1].values.len() as u64);
    }
    strides
}

/// The header line, the columns in the selection's order, and each
/// selected variable's values (sorted by code, as StatBank sends them).
fn spec_columns(
    table: &EmuTable,
    sel: &Selection,
    p: &Presentation,
) -> (Vec<u8>, Vec<Column>, Vec<VarSel>) {
    let strides = strides(table);
    let mut header = Vec::new();
    let mut columns = Vec::new();
    let mut vars = Vec::new();
    for col in &sel.columns {
        let Some(k) = col else {
            header.extend_from_slice(b"TID;");
            columns.push(Column::Time);
            continue;
        };
        let var = &table.variables[*k];
        header.extend_from_slice(var.id.to_uppercase().as_bytes());
        header.push(b';');
        let mut chosen: Vec<usize> = sel.var_values[*k].clone();
        chosen.sort_by(|a, b| var.values[*a].id.cmp(&var.values[*b].id));
        let values = chosen
            .into_iter()
            .map(|i| {
                let v = &var.values[i];
                let shown = if p.codes { &v.id } else { &v.text };
                let mut bytes = shown.as_bytes().to_vec();
                bytes.push(b';');
                SelValue {
                    bytes,
                    offset: (i as u64).wrapping_mul(strides[*k]),
                }
            })
            .collect();
        vars.push(VarSel { values });
        columns.push(Column::Var(vars.len() - 1));
    }
    header.extend_from_slice(b"INDHOLD\r\n");
    (header, columns, vars)
}

/// The selected periods, sorted by code, as codes or texts (English texts
/// of coded periods: `2023Q1` for `2023K1`).
fn spec_periods(table: &EmuTable, sel: &Selection, p: &Presentation) -> Vec<PeriodSel> {
    let mut times: Vec<&EmuValue> = sel
        .time_values
        .iter()
        .map(|i| &table.time_values[*i])
        .collect();
    times.sort_by(|a, b| a.id.cmp(&b.id));
    times
        .into_iter()
        .map(|v| {
            let mut bytes = if p.codes {
                v.id.as_bytes().to_vec()
            } else if p.english && v.text == v.id {
                super::time::english_period_text(&v.id)
                    .unwrap_or_else(|| v.text.clone())
                    .into_bytes()
            } else {
                v.text.as_bytes().to_vec()
            };
            bytes.push(b';');
            PeriodSel {
                bytes,
                hash: xxhash_rust::xxh3::xxh3_64_with_seed(v.id.as_bytes(), table.seed),
                revision: table.revision(&v.id),
            }
        })
        .collect()
}

#[inline]
pub(crate) fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Maps a fraction in [0, 1] to a u64 threshold for `hash < threshold`.
fn threshold(fraction: f64) -> u64 {
    if fraction.is_nan() || fraction <= 0.0 {
        0
    } else {
        // `as` saturates; fractions >= 1 are handled by the callers.
        (fraction * 18_446_744_073_709_551_616.0) as u64
    }
}

/// What a cell holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cell {
    /// No row for this cell.
    Absent,
    /// `..`
    Missing,
    /// The value as an integer number of `10^-decimals` units.
    Value(u64),
}

/// Deterministic cell generator: a function of (table seed via the period
/// hash, period code, revision, cell index).
#[derive(Clone, Copy, Debug)]
pub(crate) struct CellGen {
    dense: bool,
    dens_threshold: u64,
    miss_threshold: u64,
    any_missing: bool,
}

impl CellGen {
    pub(crate) fn new(density: f64, missing_rate: f64) -> CellGen {
        CellGen {
            dense: density >= 1.0,
            dens_threshold: threshold(density),
            miss_threshold: threshold(missing_rate),
            any_missing: missing_rate > 0.0,
        }
    }

    #[inline]
    pub(crate) fn cell(&self, period_hash: u64, revision: u32, cell: u64) -> Cell {
        let h = splitmix64(period_hash ^ cell.wrapping_mul(0xD6E8_FEB8_6659_FD93));
        if !self.dense && h >= self.dens_threshold {
            return Cell::Absent;
        }
        if self.any_missing && splitmix64(h ^ 0x5851_F42D_4C95_7F2D) < self.miss_threshold {
            return Cell::Missing;
        }
        let v = splitmix64(h ^ 0x1405_7B7E_F767_814F);
        let base = v % 1_000_000;
        let step = 1 + (v >> 40) % 997;
        Cell::Value(base + u64::from(revision) * step)
    }
}

/// Appends a cell's INDHOLD (without line ending).
#[inline]
fn write_value(buf: &mut Vec<u8>, value: u64, decimals: u8, sep: u8, itoa_buf: &mut itoa::Buffer) {
    if decimals == 0 {
        buf.extend_from_slice(itoa_buf.format(value).as_bytes());
        return;
    }
    let scale = 10u64.pow(u32::from(decimals));
    buf.extend_from_slice(itoa_buf.format(value / scale).as_bytes());
    buf.push(sep);
    let frac = itoa_buf.format(value % scale).as_bytes();
    for _ in frac.len()..usize::from(decimals) {
        buf.push(b'0');
    }
    buf.extend_from_slice(frac);
}

/// The levels of the odometer, outermost first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Time,
    Var(usize),
}

/// Streams a BULK body as ~64 KiB [`Bytes`] chunks; memory use is independent
/// of the number of rows.
pub(crate) struct BulkGen {
    spec: BulkSpec,
    cells: CellGen,
    levels: Vec<Level>,
    /// Current index of each level except the innermost.
    outer: Vec<usize>,
    /// Position within the innermost level.
    inner_pos: usize,
    /// Bytes of the columns before / after the innermost column for the
    /// current outer position.
    pre: Vec<u8>,
    post: Vec<u8>,
    base_cell: u64,
    period: usize,
    header_done: bool,
    done: bool,
    prefix: Option<Bytes>,
    itoa: itoa::Buffer,
}

impl BulkGen {
    /// A generator for `spec`, optionally preceded by `prefix` (e.g. a BOM).
    pub(crate) fn new(spec: BulkSpec, prefix: Option<Bytes>) -> BulkGen {
        let mut levels = Vec::with_capacity(spec.vars.len() + 1);
        if !spec.interleave {
            levels.push(Level::Time);
        }
        // Non-time variables in request (column) order.
        for c in &spec.columns {
            if let Column::Var(k) = c {
                levels.push(Level::Var(*k));
            }
        }
        if spec.interleave {
            levels.push(Level::Time);
        }
        let empty = levels.iter().any(|l| match l {
            Level::Time => spec.periods.is_empty(),
            Level::Var(k) => spec.vars[*k].values.is_empty(),
        });
        let outer = vec![0; levels.len().saturating_sub(1)];
        let mut g = BulkGen {
            cells: CellGen::new(spec.density, spec.missing_rate),
            spec,
            levels,
            outer,
            inner_pos: 0,
            pre: Vec::new(),
            post: Vec::new(),
            base_cell: 0,
            period: 0,
            header_done: false,
            done: empty,
            prefix,
            itoa: itoa::Buffer::new(),
        };
        if !g.done {
            g.refresh_outer();
        }
        g
    }

    fn level_len(&self, l: Level) -> usize {
        match l {
            Level::Time => self.spec.periods.len(),
            Level::Var(k) => self.spec.vars[k].values.len(),
        }
    }

    fn inner_level(&self) -> Level {
        self.levels.last().copied().unwrap_or(Level::Time)
    }

    /// Recomputes `pre`, `post`, `base_cell` and `period` from `outer`.
    fn refresh_outer(&mut self) {
        let inner = self.inner_level();
        let mut var_pos = vec![0usize; self.spec.vars.len()];
        self.base_cell = 0;
        self.period = 0;
        for (l, idx) in self.levels.iter().zip(&self.outer) {
            match l {
                Level::Time => self.period = *idx,
                Level::Var(k) => {
                    var_pos[*k] = *idx;
                    self.base_cell = self
                        .base_cell
                        .wrapping_add(self.spec.vars[*k].values[*idx].offset);
                }
            }
        }
        self.pre.clear();
        self.post.clear();
        let mut seen_inner = false;
        for c in &self.spec.columns {
            let is_inner = matches!((c, inner), (Column::Time, Level::Time))
                || matches!((c, inner), (Column::Var(a), Level::Var(b)) if *a == b);
            if is_inner {
                seen_inner = true;
                continue;
            }
            let bytes: &[u8] = match c {
                Column::Time => &self.spec.periods[self.period].bytes,
                Column::Var(k) => &self.spec.vars[*k].values[var_pos[*k]].bytes,
            };
            if seen_inner {
                self.post.extend_from_slice(bytes);
            } else {
                self.pre.extend_from_slice(bytes);
            }
        }
    }

    /// Advances the outer odometer; returns false when exhausted.
    fn advance_outer(&mut self) -> bool {
        for i in (0..self.outer.len()).rev() {
            self.outer[i] += 1;
            if self.outer[i] < self.level_len(self.levels[i]) {
                self.refresh_outer();
                return true;
            }
            self.outer[i] = 0;
        }
        false
    }

    /// Writes rows into `buf` until it holds at least [`CHUNK`] bytes or the
    /// body is complete.
    fn fill(&mut self, buf: &mut Vec<u8>) {
        let inner = self.inner_level();
        let inner_len = self.level_len(inner);
        let decimals = self.spec.decimals;
        let sep = self.spec.decimal_sep;
        while !self.done && buf.len() < CHUNK {
            while self.inner_pos < inner_len && buf.len() < CHUNK {
                let j = self.inner_pos;
                self.inner_pos += 1;
                let (bytes, period, cell) = match inner {
                    Level::Var(k) => {
                        let v = &self.spec.vars[k].values[j];
                        (
                            &v.bytes,
                            &self.spec.periods[self.period],
                            self.base_cell.wrapping_add(v.offset),
                        )
                    }
                    Level::Time => {
                        let p = &self.spec.periods[j];
                        (&p.bytes, p, self.base_cell)
                    }
                };
                let value = self.cells.cell(period.hash, period.revision, cell);
                if value == Cell::Absent {
                    continue;
                }
                buf.extend_from_slice(&self.pre);
                buf.extend_from_slice(bytes);
                buf.extend_from_slice(&self.post);
                match value {
                    Cell::Value(v) => write_value(buf, v, decimals, sep, &mut self.itoa),
                    _ => buf.extend_from_slice(b".."),
                }
                buf.extend_from_slice(b"\r\n");
            }
            if self.inner_pos >= inner_len {
                self.inner_pos = 0;
                if !self.advance_outer() {
                    self.done = true;
                }
            }
        }
    }
}

impl Iterator for BulkGen {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if self.header_done && self.done {
            return None;
        }
        let mut buf = Vec::with_capacity(CHUNK + 1024);
        if let Some(p) = self.prefix.take() {
            buf.extend_from_slice(&p);
        }
        if !self.header_done {
            self.header_done = true;
            buf.extend_from_slice(&self.spec.header);
        }
        self.fill(&mut buf);
        if buf.is_empty() {
            None
        } else {
            Some(Bytes::from(buf))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("2023*", "2023K1"));
        assert!(glob_match("*K1", "2023K1"));
        assert!(!glob_match("*K1", "2023K2"));
        assert!(glob_match("1*", "1"));
        assert!(glob_match("1*", "125"));
        assert!(glob_match("*", ""));
        assert!(glob_match("2*K*", "2023K4"));
        assert!(!glob_match("2023", "2023K1"));
    }

    #[test]
    fn value_formatting() {
        let mut it = itoa::Buffer::new();
        let mut b = Vec::new();
        write_value(&mut b, 377, 1, b',', &mut it);
        b.push(b' ');
        write_value(&mut b, 1050, 1, b'.', &mut it);
        b.push(b' ');
        write_value(&mut b, 5, 2, b',', &mut it);
        b.push(b' ');
        write_value(&mut b, 5_961_249, 0, b',', &mut it);
        assert_eq!(String::from_utf8_lossy(&b), "37,7 105.0 0,05 5961249");
    }

    #[test]
    fn revisions_always_change_values() {
        let g = CellGen::new(1.0, 0.0);
        for cell in 0..1000 {
            let (Cell::Value(a), Cell::Value(b)) = (g.cell(42, 0, cell), g.cell(42, 1, cell))
            else {
                panic!("dense table without missing values");
            };
            assert!(b > a);
        }
    }

    #[test]
    fn ranges_and_newest() {
        let vals: Vec<EmuValue> = ["2022K4", "2023K1", "2023K2", "2024K1", "2024K2"]
            .iter()
            .map(|c| EmuValue::code(c))
            .collect();
        let r = |e: &str| resolve_values(&vals, &[e.to_string()], "Tid");
        assert_eq!(r(">=2023K1<=2024K1"), Ok(vec![1, 2, 3]));
        assert_eq!(r(">2023K2"), Ok(vec![3, 4]));
        assert_eq!(r("(1)"), Ok(vec![4]));
        assert_eq!(r("(-n+2)"), Ok(vec![3, 4]));
        assert_eq!(r("*K1"), Ok(vec![1, 3]));
        assert_eq!(r("2024k1"), Ok(vec![3]));
        assert_eq!(
            r("1999").map_err(|e| e.message),
            Err("Kan ikke finde værdien: 1999 (Tid)".to_string())
        );
    }
}
