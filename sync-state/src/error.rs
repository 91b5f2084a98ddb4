use std::path::PathBuf;

use crate::TableId;

/// Everything that can go wrong in `sync-state`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A table id that is not 1 to 20 ASCII letters and digits.
    #[error("invalid table id {id:?}: a table id is 1-{} ASCII letters and digits, as every StatBank id is", crate::MAX_TABLE_ID_LEN)]
    InvalidTableId {
        /// The offending id (shortened).
        id: String,
    },
    /// A variable whose Postgres column would be unusable.
    #[error("table {table}: variable {variable:?} cannot be a fact table column: {reason}")]
    InvalidColumn {
        /// The table.
        table: TableId,
        /// The variable id (shortened).
        variable: String,
        /// Which limit it breaks.
        reason: String,
    },
    /// A period code that cannot be stored.
    #[error("invalid period code {tid:?}: {reason}")]
    InvalidTid {
        /// The offending period code (shortened).
        tid: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A run id that cannot name a manifest file.
    #[error("invalid run id {id:?}: only ASCII letters, digits, '_', '-' and '.' are allowed")]
    InvalidRunId {
        /// The offending id (shortened).
        id: String,
    },
    /// A timestamp that is not ISO-8601.
    #[error("invalid timestamp {value:?}: expected UTC ISO-8601 such as 2026-11-29T22:00:00Z")]
    InvalidTimestamp {
        /// The offending text.
        value: String,
    },
    /// Reading or writing a file failed.
    #[error("i/o error on {path}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file exists but does not parse as what it should be.
    #[error("corrupt {what} file {path}: {source}; it was left untouched (see README \"Recovering from a corrupt file\")")]
    Corrupt {
        /// What the file is (`state`, `run manifest`, `frequency overrides`).
        what: &'static str,
        /// The file (a path, or an object's URL).
        path: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A run manifest that does not exist.
    #[error("run manifest {path} not found")]
    ManifestNotFound {
        /// The expected file (a path, or an object's URL).
        path: String,
    },
    /// A data folder location that cannot be used.
    #[error("cannot use data folder {location:?}: {reason}")]
    UnsupportedLocation {
        /// The location as given.
        location: String,
        /// Why.
        reason: String,
    },
    /// An object-store request failed.
    #[error("object store: {op} {location} failed")]
    Storage {
        /// What was being done (`put`, `get`, `list`, …).
        op: &'static str,
        /// The object's URL.
        location: String,
        /// The store's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Another process holds the data folder's lock or lease.
    #[error("another statbank-sync cycle is running on this data folder (lock {location} held{})", .holder.as_ref().map(|h| format!(" by {h}")).unwrap_or_default())]
    Locked {
        /// The lock file or lease object.
        location: String,
        /// What the lock says about its holder.
        holder: Option<String>,
    },
    /// The lease on an object-store data folder expired or was taken over:
    /// this process must not write anything more.
    #[error("lease {location} lost ({reason}): stopped before writing")]
    LeaseLost {
        /// The lease object.
        location: String,
        /// What happened.
        reason: String,
    },
    /// Encoding a record as JSON failed (should not happen).
    #[error("cannot encode {what} as json")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// The error and all its sources as one line of text (`a: b: c`), with a
/// source left out when the text so far already contains it, and control
/// characters made visible ([`one_line`]): an error can quote upstream
/// text, which must not fake log lines or reach a terminal as escapes.
/// Shared by every layer.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    one_line(out)
}

/// `msg` as one line of visible text: line breaks and tabs become spaces,
/// other control characters `\u{…}` escapes.
///
/// ```
/// assert_eq!(sync_state::one_line("a\nb\x1b[2J".into()), "a b\\u{1b}[2J");
/// ```
pub fn one_line(msg: String) -> String {
    if !msg.chars().any(char::is_control) {
        return msg;
    }
    msg.chars()
        .map(|c| match c {
            '\n' | '\r' | '\t' => ' '.to_string(),
            c if c.is_control() => c.escape_unicode().to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// `s` cut to `max` characters (with `…` when cut), for quoting hostile
/// input in an error message.
pub fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// Longest error text stored in a manifest or `state.json` (a decode error
/// can quote a whole hostile string: found by fuzzing).
pub const MAX_ERROR_CHARS: usize = 2000;

/// `msg` cut to [`MAX_ERROR_CHARS`] characters, saying how long it was.
pub fn shorten_error(msg: String) -> String {
    // Stored errors are one line of visible text: upstream text may carry
    // line breaks that fake log or alert lines, or terminal escapes.
    let msg = one_line(msg);
    match msg.char_indices().nth(MAX_ERROR_CHARS) {
        Some((i, _)) => format!("{}… ({} bytes in all)", &msg[..i], msg.len()),
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_errors_are_bounded_and_cut_on_a_character() {
        assert_eq!(shorten_error("kort".into()), "kort");
        let long = "æ".repeat(MAX_ERROR_CHARS + 10);
        let s = shorten_error(long.clone());
        assert!(s.starts_with(&"æ".repeat(MAX_ERROR_CHARS)));
        assert!(s.ends_with(&format!("({} bytes in all)", long.len())));
        assert_eq!(
            shorten_error("a\nb\x1b[31mc\x07".into()),
            "a b\\u{1b}[31mc\\u{7}"
        );
    }
}
