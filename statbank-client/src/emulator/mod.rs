//! A local HTTP server that behaves like the StatBank API v1
//! (`https://api.statbank.dk/v1`) for everything a sync client uses:
//! `/v1/tables`, `/v1/tableinfo` and streamed `/v1/data` in `BULK` format,
//! with the real response shapes, headers and error bodies (those of the
//! recorded responses in `statbank-client/testdata/`), a mutable
//! [`World`], injectable
//! [`Fault`]s and a request log.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use statbank_client::emulator::{Emulator, World};
//! let emu = Emulator::start(World::demo()).await?;
//! let url = format!("{}/tableinfo?id=FOLK1A&format=JSON", emu.base_url());
//! emu.handle().add_period("FOLK1A", "2025K1");
//! # let _ = url;
//! emu.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Everything is deterministic: the same world answers the same request with
//! the same bytes. Cell values are a function of (table seed, period code,
//! period revision, cell index), so revising a period changes its values and
//! nothing else.

mod bulk;
mod server;
mod time;
mod world;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

pub use world::{EmuEnglish, EmuSubject, EmuTable, EmuValue, EmuVariable, World};

pub use crate::Endpoint;

/// An injected fault: applies to requests of `endpoint` (and `table`, if set).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// Which function the fault applies to.
    pub endpoint: Endpoint,
    /// Only requests for this table (case-insensitive); `None` = any.
    pub table: Option<String>,
    /// Only requests in this language (`da` when a request names none);
    /// `None` = any.
    #[serde(default)]
    pub lang: Option<String>,
    /// What happens.
    pub kind: FaultKind,
    /// `None` = every matching request; `Some(n)` = the next `n` matching requests.
    pub times: Option<u32>,
}

impl Fault {
    /// A fault on every matching request of `endpoint` (any table).
    pub fn always(endpoint: Endpoint, kind: FaultKind) -> Fault {
        Fault {
            endpoint,
            table: None,
            lang: None,
            kind,
            times: None,
        }
    }

    /// A fault on the next `n` requests of `endpoint` (any table).
    pub fn times(endpoint: Endpoint, kind: FaultKind, n: u32) -> Fault {
        Fault {
            endpoint,
            table: None,
            lang: None,
            kind,
            times: Some(n),
        }
    }

    /// Restricts the fault to one table.
    pub fn for_table(mut self, table: &str) -> Fault {
        self.table = Some(table.to_string());
        self
    }

    /// Restricts the fault to requests in one language (`da`, `en`).
    pub fn for_lang(mut self, lang: &str) -> Fault {
        self.lang = Some(lang.to_string());
        self
    }
}

/// What a [`Fault`] does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FaultKind {
    /// HTTP 500 with a small JSON body.
    Status500,
    /// HTTP 429 with `Retry-After: N`.
    TooManyRequests {
        /// Value of the `Retry-After` header, in seconds.
        retry_after_secs: u64,
    },
    /// Sleep before responding normally.
    Hang {
        /// How long to sleep.
        secs: u64,
    },
    /// Throttle the (successful) body to this rate.
    SlowBody {
        /// Body bytes per second.
        bytes_per_sec: u64,
    },
    /// Send this many bytes of the (successful) body, then abort the
    /// connection without the chunked terminator: the client sees an error,
    /// never a clean EOF (even if the body is shorter than `after_bytes`).
    Truncate {
        /// Bytes of body sent before the abort.
        after_bytes: u64,
    },
    /// Answer with this status and `{"errorTypeCode":code,"message":message}`.
    ApiError {
        /// HTTP status (invalid values become 500).
        status: u16,
        /// `errorTypeCode`.
        code: String,
        /// `message`.
        message: String,
    },
    /// Prefix a successful `/v1/data` body with a UTF-8 BOM (no effect elsewhere).
    Bom,
    /// `/v1/data` rows not time-outermost: periods round-robin (no effect elsewhere).
    Interleave,
    /// Answer 200 with exactly this body and content type, whatever was
    /// asked: a malformed catalog, a BULK body with hostile bytes.
    RawBody {
        /// `Content-Type` (`text/json; charset=utf-8`, `text/csv; charset=utf-8`).
        content_type: String,
        /// The body, byte for byte.
        body: Vec<u8>,
    },
    /// Answer with a redirect to `location` (any URL, another origin too).
    Redirect {
        /// 301, 302, 303, 307 or 308 (others become 302).
        status: u16,
        /// The `Location` header.
        location: String,
    },
}

impl FaultKind {
    /// The variant name, as recorded in [`RecordedRequest::fault`].
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Status500 => "Status500",
            FaultKind::TooManyRequests { .. } => "TooManyRequests",
            FaultKind::Hang { .. } => "Hang",
            FaultKind::SlowBody { .. } => "SlowBody",
            FaultKind::Truncate { .. } => "Truncate",
            FaultKind::ApiError { .. } => "ApiError",
            FaultKind::Bom => "Bom",
            FaultKind::Interleave => "Interleave",
            FaultKind::RawBody { .. } => "RawBody",
            FaultKind::Redirect { .. } => "Redirect",
        }
    }
}

/// Random faults: each request to one of the three endpoints is hit with
/// probability `rate` by one of `kinds`, deterministically given `seed` and
/// the emulator's request counter. Explicit [`Fault`]s take precedence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RandomFaults {
    /// Probability in [0, 1].
    pub rate: f64,
    /// Seed of the draw.
    pub seed: u64,
    /// Kinds to choose from (uniformly).
    pub kinds: Vec<FaultKind>,
}

/// One served request, as logged by the emulator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// `None` for unknown paths.
    pub endpoint: Option<Endpoint>,
    /// Requested table id, upper-cased (tableinfo and data).
    pub table: Option<String>,
    /// The language asked for (`None`: not given, which means `da`).
    pub lang: Option<String>,
    /// For data: the `Tid` value expressions as requested.
    pub tids: Vec<String>,
    /// HTTP status sent.
    pub status: u16,
    /// Name of the fault applied ([`FaultKind::name`]), if any.
    pub fault: Option<String>,
}

/// Mutable emulator state behind the shared lock.
pub(crate) struct Inner {
    pub world: World,
    pub faults: Vec<Fault>,
    pub random: Option<RandomFaults>,
    pub counter: u64,
    pub log: Vec<RecordedRequest>,
}

/// State shared by the server task, handles and response streams.
pub(crate) struct Shared {
    inner: Mutex<Inner>,
    /// Set when the emulator stops: streams abort and hangs end.
    pub stopping: std::sync::atomic::AtomicBool,
    pub shutdown: tokio::sync::watch::Sender<bool>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.shutdown.send_replace(true);
    }
}

/// A running emulator bound to a loopback port. Dropping it stops the server.
pub struct Emulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Emulator {
    /// Starts serving `world` on `127.0.0.1` with an OS-assigned port.
    pub async fn start(world: World) -> std::io::Result<Emulator> {
        Emulator::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), world).await
    }

    /// Starts serving `world` on `addr` (port 0 = any free port).
    pub async fn start_on(addr: SocketAddr, world: World) -> std::io::Result<Emulator> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (shutdown, _) = tokio::sync::watch::channel(false);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                world,
                faults: Vec::new(),
                random: None,
                counter: 0,
                log: Vec::new(),
            }),
            stopping: std::sync::atomic::AtomicBool::new(false),
            shutdown,
        });
        let task = tokio::spawn(server::serve(listener, shared.clone()));
        Ok(Emulator {
            addr,
            shared,
            task: Some(task),
        })
    }

    /// Base URL of the API, e.g. `http://127.0.0.1:41234/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A cheap, cloneable handle to inspect and mutate the running emulator.
    pub fn handle(&self) -> EmulatorHandle {
        EmulatorHandle {
            shared: self.shared.clone(),
        }
    }

    /// Stops accepting connections, aborts bodies still streaming and waits
    /// (up to 5 s) for the server task to finish.
    pub async fn shutdown(mut self) {
        self.shared.stop();
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(std::time::Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        // Signal a graceful stop; the server task closes the listener and idle
        // connections and ends on its own.
        self.shared.stop();
    }
}

/// A handle to a running [`Emulator`]: cheap to clone, `Send + Sync`, all
/// methods synchronous. Mutations are visible to the next request.
#[derive(Clone)]
pub struct EmulatorHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EmulatorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorHandle").finish_non_exhaustive()
    }
}

impl EmulatorHandle {
    /// Runs `f` on the world under the lock and returns its result.
    pub fn update<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        f(&mut self.shared.lock().world)
    }

    /// A snapshot (clone) of the world.
    pub fn world(&self) -> World {
        self.shared.lock().world.clone()
    }

    fn with_table(&self, table: &str, f: impl FnOnce(&mut EmuTable)) {
        if let Some(t) = self.shared.lock().world.table_mut(table) {
            f(t);
        }
    }

    /// Appends a `Tid` value (text = code) to `table`; no-op if the table is
    /// unknown or the period exists. Does not touch `updated` (see
    /// [`EmulatorHandle::set_updated`]).
    pub fn add_period(&self, table: &str, code: &str) {
        self.with_table(table, |t| {
            if !t.time_values.iter().any(|v| v.id == code) {
                t.time_values.push(EmuValue::code(code));
            }
        });
    }

    /// Bumps the revision of one period, so all its values change (rows that
    /// exist and `..` cells stay as they are).
    pub fn revise_period(&self, table: &str, code: &str) {
        self.with_table(table, |t| {
            *t.revisions.entry(code.to_string()).or_insert(0) += 1;
        });
    }

    /// Removes a period (and its revision) from `table`.
    pub fn remove_period(&self, table: &str, code: &str) {
        self.with_table(table, |t| {
            t.time_values.retain(|v| v.id != code);
            t.revisions.remove(code);
        });
    }

    /// Sets the `updated` token shown by the catalog and tableinfo.
    pub fn set_updated(&self, table: &str, updated: &str) {
        self.with_table(table, |t| t.updated = updated.to_string());
    }

    /// Inserts a variable at `position` (clamped; the time variable always
    /// stays last): a new breakdown, so the table's shape changes. Does not
    /// touch `updated`.
    pub fn add_variable(&self, table: &str, position: usize, v: EmuVariable) {
        self.with_table(table, |t| {
            t.variables.retain(|x| x.id != v.id);
            let at = position.min(t.variables.len());
            t.variables.insert(at, v);
        });
    }

    /// Removes a variable by id (a breakdown dropped). Does not touch
    /// `updated`.
    pub fn remove_variable(&self, table: &str, id: &str) {
        self.with_table(table, |t| t.variables.retain(|x| x.id != id));
    }

    /// Renames a variable's id (its text and values stay). Does not touch
    /// `updated`.
    pub fn rename_variable(&self, table: &str, old: &str, new: &str) {
        self.with_table(table, |t| {
            if let Some(v) = t.variables.iter_mut().find(|x| x.id == old) {
                v.id = new.to_string();
            }
        });
    }

    /// Adds a value (code = text) to a variable (a new region, age band…):
    /// a value-list change, not a shape change. Does not touch `updated`.
    pub fn add_value(&self, table: &str, variable: &str, code: &str) {
        self.with_table(table, |t| {
            if let Some(v) = t.variables.iter_mut().find(|x| x.id == variable) {
                if !v.values.iter().any(|x| x.id == code) {
                    v.values.push(EmuValue::code(code));
                }
            }
        });
    }

    /// Removes a value from a variable. Does not touch `updated`.
    pub fn remove_value(&self, table: &str, variable: &str, code: &str) {
        self.with_table(table, |t| {
            if let Some(v) = t.variables.iter_mut().find(|x| x.id == variable) {
                v.values.retain(|x| x.id != code);
            }
        });
    }

    /// Renames a value's text (its code stays). Does not touch `updated`.
    pub fn rename_value_text(&self, table: &str, variable: &str, code: &str, text: &str) {
        self.with_table(table, |t| {
            if let Some(v) = t.variables.iter_mut().find(|x| x.id == variable) {
                if let Some(x) = v.values.iter_mut().find(|x| x.id == code) {
                    x.text = text.to_string();
                }
            }
        });
    }

    /// Sets a value's English text (its code stays). Does not touch `updated`.
    pub fn rename_value_text_en(&self, table: &str, variable: &str, code: &str, text: &str) {
        self.with_table(table, |t| {
            t.english
                .values
                .entry(variable.to_string())
                .or_default()
                .insert(code.to_string(), text.to_string());
        });
    }

    /// Sets a table's title, in Danish and in English. Does not touch
    /// `updated`.
    pub fn set_title(&self, table: &str, da: &str, en: &str) {
        self.with_table(table, |t| {
            t.text = da.to_string();
            t.english.text = Some(en.to_string());
        });
    }

    /// A copy of one table (to restore it after [`EmulatorHandle::remove_table`]).
    pub fn table(&self, id: &str) -> Option<EmuTable> {
        self.shared.lock().world.table(id).cloned()
    }

    /// Adds or replaces a table.
    pub fn add_table(&self, t: EmuTable) {
        self.shared.lock().world.insert(t);
    }

    /// Removes a table (case-insensitive id).
    pub fn remove_table(&self, id: &str) {
        self.shared.lock().world.tables.remove(&id.to_uppercase());
    }

    /// Adds a fault after the existing ones (first match wins).
    pub fn add_fault(&self, f: Fault) {
        self.shared.lock().faults.push(f);
    }

    /// Removes all explicit faults (random faults stay; see
    /// [`EmulatorHandle::set_random_faults`]).
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Enables (or with `None` disables) random faults.
    pub fn set_random_faults(&self, r: Option<RandomFaults>) {
        self.shared.lock().random = r;
    }

    /// All requests served so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().log.clone()
    }

    /// Empties the request log.
    pub fn clear_requests(&self) {
        self.shared.lock().log.clear();
    }
}
