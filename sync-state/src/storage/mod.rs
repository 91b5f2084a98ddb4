//! Where a data folder lives: a local folder or a prefix in an object store
//! (S3, GCS, Azure via the `object_store` crate), behind one small, blocking
//! interface.
//!
//! Keys are `/`-separated paths relative to the data folder
//! (`statbank_tables/FOLK1A/2024K1.parquet`), identical on every backend, so
//! the layout under an `s3://bucket/prefix` is the layout on disk.
//!
//! What each backend guarantees:
//!
//! | operation | local folder | object store |
//! |---|---|---|
//! | [`Storage::put`], [`Storage::put_file`] | temp file in the same folder, fsync, rename, fsync of the folder | one PUT, or a multipart upload completed only after the whole file was sent (aborted on error) |
//! | [`Storage::put_create`] | hard link of a complete temp file (fails if the name exists) | conditional PUT `If-None-Match: *` |
//! | [`Storage::put_update`] | (not used locally) | conditional PUT `If-Match: <etag>` |
//! | [`Storage::copy`] | hard link (copy across devices) + fsync | server-side copy |
//! | [`Storage::exchange_dirs`] | `renameat2(RENAME_EXCHANGE)`: atomic for readers | not available: callers journal and roll forward |
//!
//! Object-store calls run on a small runtime of their own, so the interface
//! can be used from plain threads, from `spawn_blocking`, and (briefly) from
//! async code without nesting runtimes.
//!
//! Every write first asks the storage's [`WriteGuard`] (the data folder's
//! lease, when one is held) whether writing is still allowed: a process whose
//! lease expired stops before it writes anything.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::Error;

mod local;
mod lock;
#[cfg(feature = "object-store")]
mod object;

pub use lock::{DataDirLock, LEASE_TTL_ENV};

/// Facts about one stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// The version token for conditional updates (ETag), when the backend has
    /// one.
    pub version: Option<String>,
}

/// The direct children of a key prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Objects directly under the prefix: their last path segment and size.
    pub files: Vec<(String, u64)>,
    /// "Folders" directly under the prefix (last segment, no trailing `/`).
    pub dirs: Vec<String>,
}

/// Asked before every write; a lease that expired answers with an error.
pub trait WriteGuard: Send + Sync + fmt::Debug {
    /// `Ok` while writes are allowed.
    fn check(&self) -> Result<(), Error>;
}

#[derive(Clone)]
enum Backend {
    Local(local::Local),
    #[cfg(feature = "object-store")]
    Object(object::Object),
}

/// A data folder's storage: a local folder or an object-store prefix.
///
/// ```
/// use sync_state::storage::Storage;
/// let dir = tempfile::tempdir().unwrap();
/// let s = Storage::parse(dir.path().to_str().unwrap()).unwrap();
/// s.put("statbank_tables/_sync/state.json", b"{}").unwrap();
/// assert_eq!(s.get("statbank_tables/_sync/state.json").unwrap().unwrap().as_ref(), b"{}");
/// assert!(Storage::parse("ftp://host/x").is_err()); // never a local folder named `ftp:`
/// ```
#[derive(Clone)]
pub struct Storage {
    backend: Backend,
    guard: Option<Arc<dyn WriteGuard>>,
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Storage({})", self.describe())
    }
}

impl PartialEq for Storage {
    fn eq(&self, other: &Storage) -> bool {
        self.describe() == other.describe()
    }
}

impl Eq for Storage {}

/// The URL schemes of object stores; anything else with `://` is refused.
const OBJECT_SCHEMES: [&str; 8] = ["s3", "s3a", "gs", "az", "abfs", "abfss", "azure", "adl"];

impl Storage {
    /// A local folder.
    pub fn local(root: impl Into<PathBuf>) -> Storage {
        Storage {
            backend: Backend::Local(local::Local::new(root.into())),
            guard: None,
        }
    }

    /// A local path, `file:///path`, or an object-store URL (`s3://bucket/prefix`,
    /// `gs://bucket/prefix`, `az://container/prefix`). Credentials, region and
    /// endpoint come from the standard environment variables (`AWS_*`,
    /// `GOOGLE_*`, `AZURE_*`). Any other scheme is an error, never a local
    /// folder named after it.
    pub fn parse(location: &str) -> Result<Storage, Error> {
        Storage::parse_with(location, &[])
    }

    /// [`Storage::parse`], with object-store settings given in code rather
    /// than the environment (`("aws_endpoint", "http://127.0.0.1:8333")`,
    /// `("aws_allow_http", "true")`, …; the keys `object_store` accepts).
    /// They override the environment. Ignored for a local folder.
    pub fn parse_with(location: &str, options: &[(String, String)]) -> Result<Storage, Error> {
        let Some((scheme, rest)) = split_scheme(location) else {
            return Ok(Storage::local(location));
        };
        let scheme = scheme.to_ascii_lowercase();
        if scheme == "file" {
            return match rest.strip_prefix("//") {
                Some(path) if path.starts_with('/') => Ok(Storage::local(path)),
                _ => Err(Error::UnsupportedLocation {
                    location: location.into(),
                    reason: "a file URL must be absolute: file:///path".into(),
                }),
            };
        }
        if !OBJECT_SCHEMES.contains(&scheme.as_str()) {
            return Err(Error::UnsupportedLocation {
                location: location.into(),
                reason: format!(
                    "unknown scheme {scheme:?}: use a local path, s3://, gs:// or az://"
                ),
            });
        }
        Storage::object(location, options)
    }

    #[cfg(feature = "object-store")]
    fn object(location: &str, options: &[(String, String)]) -> Result<Storage, Error> {
        Ok(Storage {
            backend: Backend::Object(object::Object::from_url(location, options)?),
            guard: None,
        })
    }

    #[cfg(not(feature = "object-store"))]
    fn object(location: &str, _options: &[(String, String)]) -> Result<Storage, Error> {
        Err(Error::UnsupportedLocation {
            location: location.into(),
            reason: "this build has no object-store backends (cargo features s3, gcs, azure)"
                .into(),
        })
    }

    /// The same storage, with `guard` asked before every write.
    pub fn guarded(&self, guard: Arc<dyn WriteGuard>) -> Storage {
        Storage {
            backend: self.backend.clone(),
            guard: Some(guard),
        }
    }

    /// The location as the user gave it (a path, or `s3://bucket/prefix`).
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Local(l) => l.root().display().to_string(),
            #[cfg(feature = "object-store")]
            Backend::Object(o) => o.url().to_string(),
        }
    }

    /// The folder, for a local storage.
    pub fn local_root(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Local(l) => Some(l.root()),
            #[cfg(feature = "object-store")]
            Backend::Object(_) => None,
        }
    }

    /// Requests sent to the object store so far (0 for a local folder).
    pub fn requests(&self) -> u64 {
        match &self.backend {
            Backend::Local(_) => 0,
            #[cfg(feature = "object-store")]
            Backend::Object(o) => o.requests(),
        }
    }

    /// Whether this is a local folder (cheap listings, atomic renames).
    pub fn is_local(&self) -> bool {
        self.local_root().is_some()
    }

    /// How `key` is shown to a person: a path, or the object's URL.
    pub fn display_key(&self, key: &str) -> String {
        match &self.backend {
            Backend::Local(l) => l.path(key).display().to_string(),
            #[cfg(feature = "object-store")]
            Backend::Object(o) => format!("{}/{key}", o.url().trim_end_matches('/')),
        }
    }

    fn check(&self) -> Result<(), Error> {
        match &self.guard {
            Some(g) => g.check(),
            None => Ok(()),
        }
    }

    /// The whole object, or `None` when it does not exist.
    pub fn get(&self, key: &str) -> Result<Option<Bytes>, Error> {
        match &self.backend {
            Backend::Local(l) => l.get(key),
            #[cfg(feature = "object-store")]
            Backend::Object(o) => o.get(key),
        }
    }

    /// `len` bytes from `start`.
    pub fn get_range(&self, key: &str, start: u64, len: u64) -> Result<Bytes, Error> {
        match &self.backend {
            Backend::Local(l) => l.get_range(key, start, len),
            #[cfg(feature = "object-store")]
            Backend::Object(o) => o.get_range(key, start, len),
        }
    }

    /// Size and version of an object, or `None` when it does not exist.
    pub fn head(&self, key: &str) -> Result<Option<ObjectInfo>, Error> {
        match &self.backend {
            Backend::Local(l) => l.head(key),
            #[cfg(feature = "object-store")]
            Backend::Object(o) => o.head(key),
        }
    }

    /// Writes `bytes` at `key`, atomically (readers see the old object or the
    /// new one) and durably.
    pub fn put(&self, key: &str, bytes: &[u8]) -> Result<(), Error> {
        self.check()?;
        match &self.backend {
            Backend::Local(l) => l.put(key, bytes),
            #[cfg(feature = "object-store")]
            Backend::Object(o) => o.put(key, bytes),
        }
    }

    /// Publishes a complete, fsynced local file at `key`. Locally the file is
    /// renamed into place (it must be in [`Storage::scratch_dir`] of the
    /// key's folder); on an object store it is uploaded (streamed in bounded
    /// parts for large files) and becomes visible only when complete. The
    /// local file is gone afterwards.
    pub fn put_file(&self, key: &str, file: &Path) -> Result<(), Error> {
        self.check()?;
        match &self.backend {
            Backend::Local(l) => l.put_file(key, file),
            #[cfg(feature = "object-store")]
            Backend::Object(o) => o.put_file(key, file),
        }
    }

    /// Creates `key` only if it does not exist. `Ok(None)` when it exists.
    pub fn put_create(&self, key: &str, bytes: &[u8]) -> Result<Option<ObjectInfo>, Error> {
        match &self.backend {
            Backend::Local(l) => l.put_create(key, bytes),
            #[cfg(feature = "object-store")]
            Backend::Object(o) => o.put_create(key, bytes),
        }
    }

    /// Replaces `key` only if it is still at `version`. `Ok(None)` when it
    /// changed (or vanished) meanwhile.
    pub fn put_update(
        &self,
        key: &str,
        bytes: &[u8],
        version: &str,
    ) -> Result<Option<ObjectInfo>, Error> {
        match &self.backend {
            Backend::Local(l) => l.put_update(key, bytes, version),
            #[cfg(feature = "object-store")]
            Backend::Object(o) => o.put_update(key, bytes, version),
        }
    }

    /// Removes `key`; `Ok(false)` when it did not exist.
    pub fn delete(&self, key: &str) -> Result<bool, Error> {
        self.check()?;
        self.delete_unguarded(key)
    }

    pub(crate) fn delete_unguarded(&self, key: &str) -> Result<bool, Error> {
        match &self.backend {
            Backend::Local(l) => l.delete(key),
            #[cfg(feature = "object-store")]
            Backend::Object(o) => o.delete(key),
        }
    }

    /// Copies `from` to `to` (replacing `to`). Locally a hard link: files are
    /// never modified in place, only replaced, so sharing the inode is safe.
    pub fn copy(&self, from: &str, to: &str) -> Result<(), Error> {
        self.check()?;
        match &self.backend {
            Backend::Local(l) => l.copy(from, to),
            #[cfg(feature = "object-store")]
            Backend::Object(o) => o.copy(from, to),
        }
    }

    /// Moves `from` to `to` (replacing `to`): a rename locally, copy then
    /// delete on an object store.
    pub fn rename(&self, from: &str, to: &str) -> Result<(), Error> {
        self.check()?;
        match &self.backend {
            Backend::Local(l) => l.rename(from, to),
            #[cfg(feature = "object-store")]
            Backend::Object(o) => {
                o.copy(from, to)?;
                o.delete(from).map(|_| ())
            }
        }
    }

    /// The direct children of `prefix` (a folder key, no trailing `/`).
    /// A missing folder lists as empty.
    pub fn list_dir(&self, prefix: &str) -> Result<Listing, Error> {
        match &self.backend {
            Backend::Local(l) => l.list_dir(prefix),
            #[cfg(feature = "object-store")]
            Backend::Object(o) => o.list_dir(prefix),
        }
    }

    /// Every object under `prefix`, recursively (keys relative to the data
    /// folder), sorted by key.
    pub fn list_recursive(&self, prefix: &str) -> Result<Vec<ObjectInfo>, Error> {
        match &self.backend {
            Backend::Local(l) => l.list_recursive(prefix),
            #[cfg(feature = "object-store")]
            Backend::Object(o) => o.list_recursive(prefix),
        }
    }

    /// Whether [`Storage::exchange_dirs`] is available (local folders).
    pub fn can_exchange_dirs(&self) -> bool {
        self.is_local()
    }

    /// Atomically exchanges two folders (both must exist), or moves `a` to
    /// `b` when `b` does not exist. Local folders only.
    pub fn exchange_dirs(&self, a: &str, b: &str) -> Result<(), Error> {
        self.check()?;
        match &self.backend {
            Backend::Local(l) => l.exchange_dirs(a, b),
            #[cfg(feature = "object-store")]
            Backend::Object(o) => Err(Error::UnsupportedLocation {
                location: o.url().to_string(),
                reason: "an object store cannot exchange folders".into(),
            }),
        }
    }

    /// Removes every object under `prefix` (and, locally, the folder).
    /// Returns how many objects were removed.
    pub fn delete_prefix(&self, prefix: &str) -> Result<usize, Error> {
        self.check()?;
        match &self.backend {
            Backend::Local(l) => l.delete_prefix(prefix),
            #[cfg(feature = "object-store")]
            Backend::Object(o) => {
                let mut n = 0;
                for obj in o.list_recursive(prefix)? {
                    if o.delete(&obj.key)? {
                        n += 1;
                    }
                }
                Ok(n)
            }
        }
    }

    /// Removes an empty (or temp-only) local folder; a no-op on object stores,
    /// which have no folders.
    pub fn remove_dir(&self, prefix: &str) -> Result<(), Error> {
        self.check()?;
        match &self.backend {
            Backend::Local(l) => l.remove_dir(prefix),
            #[cfg(feature = "object-store")]
            Backend::Object(_) => Ok(()),
        }
    }

    /// A local folder where files bound for keys under `prefix` are staged
    /// before [`Storage::put_file`]: the key's own folder locally (so the
    /// publish is a rename), a private temp folder for object stores.
    pub fn scratch_dir(&self, prefix: &str) -> Result<PathBuf, Error> {
        match &self.backend {
            Backend::Local(l) => {
                let p = l.path(prefix);
                std::fs::create_dir_all(&p).map_err(|e| Error::io(&p, e))?;
                Ok(p)
            }
            #[cfg(feature = "object-store")]
            Backend::Object(o) => o.scratch_dir(),
        }
    }

    /// Removes temp files (`.tmp-*`) that an interrupted process left in the
    /// folder of `prefix` (local only; uploads are never partial objects).
    pub fn clean_temp_files(&self, prefix: &str) -> usize {
        match &self.backend {
            Backend::Local(l) => crate::fsio::clean_temp_files(&l.path(prefix)),
            #[cfg(feature = "object-store")]
            Backend::Object(_) => 0,
        }
    }

    /// Aborts the multipart uploads that a killed process left unfinished
    /// (object stores; a no-op locally, where a partial file is a temp file).
    /// Call it while holding the data folder's lock. Returns how many.
    pub fn abort_stale_uploads(&self) -> Result<usize, Error> {
        self.check()?;
        match &self.backend {
            Backend::Local(_) => Ok(0),
            #[cfg(feature = "object-store")]
            Backend::Object(o) => o.abort_stale_uploads(),
        }
    }
}

/// `scheme` and the rest when `location` starts with `scheme:` followed by
/// `//` (a URL); a Windows drive letter or a plain path has none.
fn split_scheme(location: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = location.split_once(':')?;
    let valid = scheme.len() > 1
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !valid {
        return None;
    }
    if rest.starts_with("//") || OBJECT_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) {
        Some((scheme, rest))
    } else {
        None
    }
}

/// Joins key segments with `/`.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{}/{name}", prefix.trim_end_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_or_fail_clearly() {
        assert!(Storage::parse("data/dst").expect("local").is_local());
        assert!(Storage::parse("/abs/path").expect("local").is_local());
        assert!(Storage::parse("file:///abs/path")
            .expect("file url")
            .is_local());
        assert!(Storage::parse("file://relative").is_err());
        for bad in ["ftp://host/x", "http://host/x", "mirror://x"] {
            let e = Storage::parse(bad).expect_err(bad).to_string();
            assert!(e.contains(bad) && e.contains("scheme"), "{e}");
        }
        // `s3:bucket` (a typo) is not a local folder named `s3:bucket`.
        assert!(split_scheme("s3:bucket").is_some());
        assert!(split_scheme("c:/windows").is_none());
        assert!(split_scheme("data:dst").is_none());
    }

    #[test]
    fn local_storage_round_trips() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = Storage::local(tmp.path());
        assert!(s.get("a/b.json").expect("get").is_none());
        s.put("a/b.json", b"1").expect("put");
        s.put("a/b.json", b"22").expect("put again");
        assert_eq!(s.head("a/b.json").expect("head").expect("exists").size, 2);
        assert_eq!(s.get_range("a/b.json", 1, 1).expect("range").as_ref(), b"2");
        assert!(s.put_create("a/b.json", b"x").expect("create").is_none());
        assert!(s.put_create("a/c.json", b"x").expect("create").is_some());
        s.copy("a/c.json", "v/c.json").expect("copy");
        s.rename("a/c.json", "a/d.json").expect("rename");
        let l = s.list_dir("a").expect("list");
        let names: Vec<&str> = l.files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["b.json", "d.json"]);
        assert_eq!(s.list_dir("").expect("root").dirs, vec!["a", "v"]);
        let all: Vec<String> = s
            .list_recursive("")
            .expect("all")
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(all, vec!["a/b.json", "a/d.json", "v/c.json"]);
        assert!(s.delete("a/b.json").expect("delete"));
        assert!(!s.delete("a/b.json").expect("delete again"));
        assert!(s.list_dir("nope").expect("missing").files.is_empty());
    }

    #[test]
    fn exchange_swaps_folders_atomically() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = Storage::local(tmp.path());
        s.put("t/FOLK/1.parquet", b"old").expect("put");
        s.put("t/_sync/staging/FOLK/2.parquet", b"new")
            .expect("put");
        s.exchange_dirs("t/_sync/staging/FOLK", "t/FOLK")
            .expect("exchange");
        assert_eq!(s.list_dir("t/FOLK").expect("l").files[0].0, "2.parquet");
        assert_eq!(
            s.list_dir("t/_sync/staging/FOLK").expect("l").files[0].0,
            "1.parquet"
        );
        // into a missing folder: a plain move
        s.exchange_dirs("t/_sync/staging/FOLK", "t/NEW")
            .expect("move");
        assert!(s
            .list_dir("t/_sync/staging/FOLK")
            .expect("l")
            .files
            .is_empty());
        assert_eq!(s.list_dir("t/NEW").expect("l").files[0].0, "1.parquet");
    }

    #[derive(Debug)]
    struct Expired;
    impl WriteGuard for Expired {
        fn check(&self) -> Result<(), Error> {
            Err(Error::LeaseLost {
                location: "x".into(),
                reason: "test".into(),
            })
        }
    }

    #[test]
    fn a_failed_guard_stops_every_write() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = Storage::local(tmp.path()).guarded(Arc::new(Expired));
        assert!(s.put("a.json", b"1").is_err());
        assert!(s.delete("a.json").is_err());
        assert!(s.get("a.json").expect("reads still work").is_none());
        assert!(!tmp.path().join("a.json").exists());
    }
}
