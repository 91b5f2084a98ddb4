use std::path::PathBuf;

/// Everything that can go wrong when the layers are composed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A StatBank request failed.
    #[error(transparent)]
    Client(#[from] statbank_client::Error),
    /// Writing or reading partitions failed.
    #[error(transparent)]
    Store(#[from] partition_store::Error),
    /// State, manifest or overrides failed.
    #[error(transparent)]
    State(#[from] sync_state::Error),
    /// The DB apply failed as a whole (boxed: the apply's errors carry a
    /// table, a period and a file).
    #[error(transparent)]
    Apply(Box<fact_apply::Error>),
    /// A file-system operation failed.
    #[error("i/o error on {path}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A response that does not have the shape the sync relies on.
    #[error("table {table}: {message}")]
    Shape {
        /// The table.
        table: String,
        /// What is wrong.
        message: String,
    },
    /// A database connection string that cannot be parsed (nothing of it
    /// is shown: it may hold a password).
    #[error("invalid database connection string (--database-url / DATABASE_URL): {reason}")]
    DatabaseUrl {
        /// What the parser said, the string scrubbed from it.
        reason: String,
    },
    /// Connecting to the database failed.
    #[error("connecting to {url}")]
    Connect {
        /// The connection string, password redacted.
        url: String,
        /// The driver's error.
        #[source]
        source: fact_apply::postgres::Error,
    },
    /// An option that cannot be honoured, and why.
    #[error("invalid option {option}: {reason}")]
    Option {
        /// The option (`--languages`).
        option: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The work was stopped (SIGTERM, ctrl-c) before it finished.
    #[error("interrupted before completion")]
    Interrupted,
    /// A background task failed unexpectedly.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<fact_apply::Error> for Error {
    fn from(e: fact_apply::Error) -> Error {
        Error::Apply(Box::new(e))
    }
}

impl Error {
    /// Whether another process holds the data folder's lock (or lease).
    pub fn is_locked(&self) -> bool {
        matches!(self, Error::State(sync_state::Error::Locked { .. }))
    }
}
