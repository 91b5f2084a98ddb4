//! One cycle per data folder: an OS file lock (`flock`) on a local folder, a
//! lease object on an object store.
//!
//! The lease (`statbank_tables/_sync/lock`) is a small JSON object created
//! with a conditional PUT (create-only). It names its holder (host and pid)
//! and carries an expiry; a thread renews it (conditional PUT on its
//! version) every quarter of its time to live. Another process takes it
//! over only after it expired — or at once when the holder is a process of
//! the same host that no longer exists (a crashed run restarted on the same
//! machine) — again with a conditional PUT on the version read, so two
//! processes can never both win. A process whose renewal failed, or whose last successful
//! renewal is older than the time to live (a paused or partitioned
//! process), refuses every further write through the guarded storage
//! ([`super::WriteGuard`]): it stops before writing state or manifest.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Storage, WriteGuard};
use crate::Error;

/// Overrides the lease's time to live in seconds (default 120).
pub const LEASE_TTL_ENV: &str = "STATBANK_LEASE_TTL_SECS";

const DEFAULT_TTL: Duration = Duration::from_secs(120);

/// The lock of a data folder, held for the life of the value.
#[derive(Debug)]
pub struct DataDirLock {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Flock { file: File, path: PathBuf },
    Lease(Arc<LeaseState>, Option<std::thread::JoinHandle<()>>),
}

/// What the lease object says.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseBody {
    holder: String,
    #[serde(default)]
    host: String,
    #[serde(default)]
    pid: u32,
    /// Boot id and pid namespace of the holder: `pid` means something here
    /// only when both equal ours (containers sharing a host name do not
    /// share a pid namespace).
    #[serde(default)]
    pid_scope: String,
    note: String,
    acquired_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

#[derive(Debug)]
struct LeaseState {
    storage: Storage,
    key: String,
    ttl: Duration,
    body: Mutex<LeaseBody>,
    version: Mutex<Option<String>>,
    renewed: Mutex<Instant>,
    lost: AtomicBool,
    stop: (Mutex<bool>, Condvar),
}

impl WriteGuard for LeaseState {
    fn check(&self) -> Result<(), Error> {
        let lost = |reason: String| Error::LeaseLost {
            location: self.storage.display_key(&self.key),
            reason,
        };
        if self.lost.load(Ordering::SeqCst) {
            return Err(lost("its renewal failed or it was taken over".into()));
        }
        let age = self.renewed.lock().map(|t| t.elapsed()).unwrap_or(self.ttl);
        // A margin of a tenth of the time to live for clock drift and the
        // write itself.
        if age + self.ttl / 10 >= self.ttl {
            return Err(lost(format!(
                "not renewed for {} s (time to live {} s)",
                age.as_secs(),
                self.ttl.as_secs()
            )));
        }
        Ok(())
    }
}

impl DataDirLock {
    /// Takes the lock of `storage`'s data folder, with the lock's key
    /// `key`, or fails at once with [`Error::Locked`]. `note` says who holds
    /// it (shown to a process that is refused).
    pub fn acquire(storage: &Storage, key: &str, note: &str) -> Result<DataDirLock, Error> {
        DataDirLock::acquire_with_ttl(storage, key, note, ttl())
    }

    /// [`DataDirLock::acquire`] with the lease's time to live given (object
    /// stores; a local lock has none).
    pub fn acquire_with_ttl(
        storage: &Storage,
        key: &str,
        note: &str,
        ttl: Duration,
    ) -> Result<DataDirLock, Error> {
        match storage.local_root() {
            Some(root) => flock(root.join(key), note),
            None => lease(storage, key, note, ttl),
        }
    }

    /// A guard for [`Storage::guarded`]: writes fail once the lease is lost.
    /// `None` for a local lock (the kernel holds it until the process dies).
    pub fn guard(&self) -> Option<Arc<dyn WriteGuard>> {
        match &self.inner {
            Inner::Flock { .. } => None,
            Inner::Lease(s, _) => Some(s.clone() as Arc<dyn WriteGuard>),
        }
    }

    /// Where the lock lives.
    pub fn location(&self) -> String {
        match &self.inner {
            Inner::Flock { path, .. } => path.display().to_string(),
            Inner::Lease(s, _) => s.storage.display_key(&s.key),
        }
    }
}

fn flock(path: PathBuf, note: &str) -> Result<DataDirLock, Error> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim().to_string();
            return Err(Error::Locked {
                location: path.display().to_string(),
                holder: (!holder.is_empty()).then_some(holder),
            });
        }
        Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
    }
    let mut stale = String::new();
    let _ = file.read_to_string(&mut stale);
    if !stale.trim().is_empty() {
        tracing::info!(previous = %stale.trim(), "took over a lock left by a process that is gone");
    }
    file.set_len(0).map_err(|e| Error::io(&path, e))?;
    file.rewind().map_err(|e| Error::io(&path, e))?;
    writeln!(file, "pid {} {note}", std::process::id()).map_err(|e| Error::io(&path, e))?;
    Ok(DataDirLock {
        inner: Inner::Flock { file, path },
    })
}

fn ttl() -> Duration {
    std::env::var(LEASE_TTL_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TTL)
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown-host".into())
}

/// This process's boot id and pid namespace (`""` when they cannot be
/// read): pids compare only within one scope.
fn pid_scope() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id");
    let ns = std::fs::read_link("/proc/self/ns/pid");
    match (boot, ns) {
        (Ok(b), Ok(n)) => format!("{} {}", b.trim(), n.display()),
        _ => String::new(),
    }
}

/// Whether the lease's holder is a process of this host, boot and pid
/// namespace that is gone (so the lease may be taken over before it
/// expires). Elsewhere, or when it cannot be told (a holder in another
/// container with the same host name, a lease written without a scope),
/// the holder counts as alive and the lease must expire.
fn holder_is_gone(b: &LeaseBody) -> bool {
    b.pid != 0
        && b.host == host()
        && !b.pid_scope.is_empty()
        && b.pid_scope == pid_scope()
        && b.pid != std::process::id()
        && std::path::Path::new("/proc/self").exists()
        && !std::path::Path::new(&format!("/proc/{}", b.pid)).exists()
}

fn encode(body: &LeaseBody) -> Result<Vec<u8>, Error> {
    crate::fsio::encode_json(body, "lease")
}

fn lease(storage: &Storage, key: &str, note: &str, ttl: Duration) -> Result<DataDirLock, Error> {
    let now = Utc::now();
    let body = LeaseBody {
        holder: format!("{} pid {}", host(), std::process::id()),
        host: host(),
        pid: std::process::id(),
        pid_scope: pid_scope(),
        note: note.to_string(),
        acquired_at: now,
        expires_at: now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX),
    };
    let bytes = encode(&body)?;
    let created = match storage.put_create(key, &bytes)? {
        Some(info) => info,
        None => take_over_expired(storage, key, &bytes, now)?,
    };
    let state = Arc::new(LeaseState {
        storage: storage.clone(),
        key: key.to_string(),
        ttl,
        body: Mutex::new(body),
        version: Mutex::new(created.version),
        renewed: Mutex::new(Instant::now()),
        lost: AtomicBool::new(false),
        stop: (Mutex::new(false), Condvar::new()),
    });
    let renewer = {
        let s = state.clone();
        std::thread::Builder::new()
            .name("statbank-lease".into())
            .spawn(move || renew_loop(&s))
            .map_err(|e| Error::io(key, e))?
    };
    Ok(DataDirLock {
        inner: Inner::Lease(state, Some(renewer)),
    })
}

/// The lease exists: take it over only when it expired, with a conditional
/// PUT on the version read, so that of two processes only one wins.
fn take_over_expired(
    storage: &Storage,
    key: &str,
    bytes: &[u8],
    now: DateTime<Utc>,
) -> Result<super::ObjectInfo, Error> {
    let refused = |holder: Option<String>| Error::Locked {
        location: storage.display_key(key),
        holder,
    };
    let Some(info) = storage.head(key)? else {
        // Released meanwhile: try once more to create it.
        return storage.put_create(key, bytes)?.ok_or_else(|| refused(None));
    };
    let current = storage.get(key)?.unwrap_or_default();
    let old: Option<LeaseBody> = serde_json::from_slice(&current).ok();
    let expired = old
        .as_ref()
        .is_none_or(|b| b.expires_at <= now || holder_is_gone(b));
    let shown = old.as_ref().map(|b| {
        format!(
            "{} ({}, until {})",
            b.holder,
            b.note,
            b.expires_at.format("%Y-%m-%dT%H:%M:%SZ")
        )
    });
    if !expired {
        return Err(refused(shown));
    }
    let Some(version) = info.version else {
        return Err(refused(shown));
    };
    match storage.put_update(key, bytes, &version)? {
        Some(info) => {
            tracing::warn!(
                previous = shown.as_deref().unwrap_or("unreadable"),
                "took over an expired lease"
            );
            Ok(info)
        }
        None => Err(refused(shown)),
    }
}

fn renew_loop(s: &LeaseState) {
    let every = s.ttl / 4;
    loop {
        {
            let (m, cv) = &s.stop;
            let Ok(stopped) = m.lock() else { return };
            let Ok((stopped, _)) = cv.wait_timeout_while(stopped, every, |stop| !*stop) else {
                return;
            };
            if *stopped {
                return;
            }
        }
        if let Err(e) = renew(s) {
            tracing::error!(error = %crate::error_chain(&e), "lease lost: no further writes");
            s.lost.store(true, Ordering::SeqCst);
            return;
        }
    }
}

fn renew(s: &LeaseState) -> Result<(), Error> {
    let started = Instant::now();
    let bytes = {
        let mut body = s
            .body
            .lock()
            .map_err(|_| Error::io(&s.key, std::io::Error::other("lease state poisoned")))?;
        body.expires_at =
            Utc::now() + chrono::Duration::from_std(s.ttl).unwrap_or(chrono::Duration::MAX);
        encode(&body)?
    };
    let mut version = s
        .version
        .lock()
        .map_err(|_| Error::io(&s.key, std::io::Error::other("lease state poisoned")))?;
    let Some(v) = version.clone() else {
        return Err(Error::LeaseLost {
            location: s.storage.display_key(&s.key),
            reason: "the store gave the lease no version".into(),
        });
    };
    match s.storage.put_update(&s.key, &bytes, &v)? {
        Some(info) => {
            *version = info.version;
            if let Ok(mut t) = s.renewed.lock() {
                *t = started;
            }
            Ok(())
        }
        None => Err(Error::LeaseLost {
            location: s.storage.display_key(&s.key),
            reason: "taken over by another process".into(),
        }),
    }
}

impl Drop for DataDirLock {
    fn drop(&mut self) {
        match &mut self.inner {
            Inner::Flock { file, .. } => {
                let _ = file.set_len(0);
                let _ = file.unlock();
            }
            Inner::Lease(s, handle) => {
                {
                    let (m, cv) = &s.stop;
                    if let Ok(mut stop) = m.lock() {
                        *stop = true;
                    }
                    cv.notify_all();
                }
                if let Some(h) = handle.take() {
                    let _ = h.join();
                }
                // Release only a lease that is still ours: a conditional
                // update to an already-expired body. The object stays (a
                // delete cannot be conditional, and could remove a
                // successor's lease); the next holder takes it over.
                if !s.lost.load(Ordering::SeqCst) {
                    if let (Ok(v), Ok(mut body)) = (s.version.lock(), s.body.lock()) {
                        if let Some(v) = v.clone() {
                            body.expires_at = DateTime::<Utc>::UNIX_EPOCH;
                            if let Ok(bytes) = encode(&body) {
                                let _ = s.storage.put_update(&s.key, &bytes, &v);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_and_released_lock_is_reusable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Storage::local(dir.path());
        let a = DataDirLock::acquire(&s, "_sync/lock", "run A").expect("first");
        let err = DataDirLock::acquire(&s, "_sync/lock", "run B").expect_err("held");
        assert!(err.to_string().contains("run A"), "{err}");
        drop(a);
        DataDirLock::acquire(&s, "_sync/lock", "run C").expect("after release");
    }

    /// A dead holder's lease is taken over early only when its pid means
    /// the same process table as ours (same host, boot and pid namespace).
    #[test]
    fn a_dead_pid_counts_only_in_our_pid_scope() {
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let dead = child.id();
        child.wait().expect("wait");
        let now = Utc::now();
        let body = |scope: String| LeaseBody {
            holder: "h".into(),
            host: host(),
            pid: dead,
            pid_scope: scope,
            note: String::new(),
            acquired_at: now,
            expires_at: now + chrono::Duration::hours(1),
        };
        if pid_scope().is_empty() {
            return; // no /proc here: nothing is ever taken over early
        }
        assert!(holder_is_gone(&body(pid_scope())));
        assert!(!holder_is_gone(&body("other-boot pid:[1]".into())));
        assert!(
            !holder_is_gone(&body(String::new())),
            "a lease without a scope"
        );
    }
}
