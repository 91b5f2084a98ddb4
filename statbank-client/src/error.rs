use std::time::Duration;

/// Which API function a request went to (also what the emulator records
/// and injects faults on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Endpoint {
    /// `/v1/subjects`
    Subjects,
    /// `/v1/tables`
    Tables,
    /// `/v1/tableinfo`
    TableInfo,
    /// `/v1/data`
    Data,
}

impl Endpoint {
    /// The path below the base URL.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Subjects => "subjects",
            Endpoint::Tables => "tables",
            Endpoint::TableInfo => "tableinfo",
            Endpoint::Data => "data",
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "/{}", self.path())
    }
}

/// Formats the optional table of an error as `" for table FOLK1A"`.
fn for_table(table: &Option<String>) -> String {
    table
        .as_ref()
        .map(|t| format!(" for table {t}"))
        .unwrap_or_default()
}

/// Everything that can go wrong talking to StatBank.
///
/// [`Error::is_retryable`] tells whether trying again may help: transport
/// errors, timeouts, HTTP 5xx and 429 are; API errors (HTTP 4xx with an
/// `errorTypeCode`), decode and parse errors are not.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The API answered with an error body `{"errorTypeCode","message"}`.
    #[error("statbank api error {code} (http {status}) on {endpoint}{}: {message}", for_table(.table))]
    Api {
        /// The function called.
        endpoint: Endpoint,
        /// The table, when the request named one.
        table: Option<String>,
        /// The HTTP status.
        status: u16,
        /// `errorTypeCode`, e.g. `EXTRACT-NOTFOUND`.
        code: String,
        /// The API's message (Danish by default).
        message: String,
    },
    /// An HTTP error status without an API error body (5xx, 429, proxies).
    #[error("http status {status} on {endpoint}{}{}", for_table(.table), .body.as_ref().map(|b| format!(": {b}")).unwrap_or_default())]
    Status {
        /// The function called.
        endpoint: Endpoint,
        /// The table, when the request named one.
        table: Option<String>,
        /// The HTTP status.
        status: u16,
        /// `Retry-After`, when the server sent one.
        retry_after: Option<Duration>,
        /// The start of the body, if any.
        body: Option<String>,
    },
    /// No answer (or no further body bytes) within the configured timeout.
    #[error("timeout on {endpoint}{}", for_table(.table))]
    Timeout {
        /// The function called.
        endpoint: Endpoint,
        /// The table, when the request named one.
        table: Option<String>,
    },
    /// Connecting, sending or receiving failed (including a body cut off
    /// mid-stream by the connection).
    #[error("transport error on {endpoint}{}", for_table(.table))]
    Transport {
        /// The function called.
        endpoint: Endpoint,
        /// The table, when the request named one.
        table: Option<String>,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// The API's host name cannot be resolved (offline, or a wrong
    /// `--base-url`). Not retried: the run fails at once, naming the host.
    #[error("cannot resolve host {host} for {endpoint}: offline? Against the local emulator (statbank-emulator) pass --base-url http://127.0.0.1:8080/v1")]
    Unresolved {
        /// The function called.
        endpoint: Endpoint,
        /// The host name.
        host: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// A JSON answer that does not have the expected shape.
    #[error("cannot decode {endpoint} response{}", for_table(.table))]
    Decode {
        /// The function called.
        endpoint: Endpoint,
        /// The table, when the request named one.
        table: Option<String>,
        /// The decoder's error (names the missing field).
        #[source]
        source: serde_json::Error,
    },
    /// A tableinfo without a time variable (none marked as time, none
    /// called `Tid`): the table cannot be partitioned by period.
    #[error("table {table}: tableinfo has no time variable (Tid)")]
    NoTimeVariable {
        /// The table.
        table: String,
    },
    /// A tableinfo listing more periods than any real table has
    /// ([`crate::MAX_PERIODS`]).
    #[error(
        "table {table}: tableinfo lists {count} periods, more than the limit of {}",
        crate::MAX_PERIODS
    )]
    TooManyPeriods {
        /// The table.
        table: String,
        /// How many it lists.
        count: usize,
    },
    /// A period code that cannot be stored.
    #[error("table {table}: tableinfo period")]
    InvalidPeriod {
        /// The table.
        table: String,
        /// Why.
        #[source]
        source: sync_state::Error,
    },
    /// A BULK body with a malformed line.
    #[error("table {table}: bad bulk data at line {line}: {message}")]
    Bulk {
        /// The table.
        table: String,
        /// 1-based line number (the header is line 1).
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// A BULK body that ended before its last line was complete.
    #[error("table {table}: bulk response truncated after {bytes} bytes ({rows} complete rows)")]
    Truncated {
        /// The table.
        table: String,
        /// Bytes received.
        bytes: u64,
        /// Complete rows parsed.
        rows: u64,
    },
    /// A response larger than the configured limit.
    #[error("{endpoint}{}: response larger than the limit of {limit} bytes", for_table(.table))]
    TooLarge {
        /// The function called.
        endpoint: Endpoint,
        /// The table, when the request named one.
        table: Option<String>,
        /// The configured limit.
        limit: u64,
    },
    /// The configuration is invalid (bad base URL, bad TLS set-up).
    #[error("invalid client configuration: {0}")]
    Config(String),
    /// An id in a response cannot be used (path or SQL hazard).
    #[error("invalid identifier in {endpoint} response{}", for_table(.table))]
    InvalidId {
        /// The function called.
        endpoint: Endpoint,
        /// The table, when known.
        table: Option<String>,
        /// Why.
        #[source]
        source: sync_state::Error,
    },
}

impl Error {
    /// Whether the same request may succeed if tried again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Status { status, .. } => *status == 429 || *status >= 500,
            Error::Api { status, .. } => *status == 429 || *status >= 500,
            Error::Timeout { .. } | Error::Transport { .. } | Error::Truncated { .. } => true,
            _ => false,
        }
    }

    /// The server's `Retry-After`, when it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The API's `errorTypeCode`, for API errors.
    pub fn api_code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}
