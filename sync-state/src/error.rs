use std::path::PathBuf;

/// Everything that can go wrong in `sync-state`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A table id that is not letters, digits, `_` or `-`.
    #[error("invalid table id {id:?}: only ASCII letters, digits, '_' and '-' are allowed (1-64 characters)")]
    InvalidTableId {
        /// The offending id (shortened).
        id: String,
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
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A run manifest that does not exist.
    #[error("run manifest {path} not found")]
    ManifestNotFound {
        /// The expected file.
        path: PathBuf,
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

/// The error and all its sources as one text (`a: b: c`), with a source left
/// out when the text so far already contains it. Shared by every layer.
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
    out
}

/// `s` cut to `max` characters (with `…` when cut), for quoting hostile
/// input in an error message.
pub fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}
