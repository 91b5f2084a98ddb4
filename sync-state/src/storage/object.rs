//! The object-store backend (S3, GCS, Azure through the `object_store`
//! crate). Calls run on a small runtime of their own and are waited for on
//! the caller's thread, so the storage interface stays synchronous.

use std::future::Future;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

use super::{Listing, ObjectInfo};
use crate::Error;

/// Files up to this size are uploaded with one PUT; larger ones as a
/// multipart upload of parts this size, one part in memory at a time.
/// `STATBANK_UPLOAD_PART_MIB` changes it (at least 5, the S3 minimum).
fn part_bytes() -> usize {
    static PART: OnceLock<usize> = OnceLock::new();
    *PART.get_or_init(|| {
        let mib = std::env::var("STATBANK_UPLOAD_PART_MIB")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(8)
            .max(5);
        mib * 1024 * 1024
    })
}

/// Where a multipart upload in progress is recorded (key and upload id), so
/// that one a killed process left behind is aborted by the next run.
pub(super) const UPLOADS_PREFIX: &str = "statbank_tables/_sync/uploads";

/// The record of an upload in progress.
#[derive(serde::Serialize, serde::Deserialize)]
struct UploadRecord {
    key: String,
    upload_id: String,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("statbank-store")
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            // Without a runtime nothing can talk to the store at all.
            Err(e) => panic!("cannot start the object-store runtime: {e}"),
        }
    })
}

/// Runs `f` on the storage runtime and waits for it on this thread.
fn block<F>(f: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime().spawn(async move {
        let _ = tx.send(f.await);
    });
    match rx.recv() {
        Ok(v) => v,
        Err(_) => panic!("the object-store runtime dropped a request"),
    }
}

#[derive(Clone)]
pub(super) struct Object {
    /// Requests sent (for the benches and metrics).
    requests: Arc<std::sync::atomic::AtomicU64>,
    store: Arc<dyn ObjectStore>,
    multipart: Arc<dyn MultipartStore>,
    /// The prefix inside the bucket (no leading or trailing `/`).
    prefix: String,
    url: String,
    scratch: Arc<OnceLock<tempfile::TempDir>>,
}

impl std::fmt::Debug for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Object({})", self.url)
    }
}

impl Object {
    pub(super) fn from_url(location: &str, options: &[(String, String)]) -> Result<Object, Error> {
        let unsupported = |reason: String| Error::UnsupportedLocation {
            location: location.into(),
            reason,
        };
        let (scheme, rest) = location
            .split_once("://")
            .ok_or_else(|| unsupported("expected scheme://bucket/prefix".into()))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(unsupported("no bucket name".into()));
        }
        let prefix = prefix.trim_matches('/').to_string();
        ObjPath::parse(&prefix).map_err(|e| unsupported(e.to_string()))?;
        let (store, multipart) =
            build(&scheme.to_ascii_lowercase(), location, options).map_err(unsupported)?;
        Ok(Object {
            requests: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            store,
            multipart,
            prefix,
            url: location.trim_end_matches('/').to_string(),
            scratch: Arc::new(OnceLock::new()),
        })
    }

    pub(super) fn url(&self) -> &str {
        &self.url
    }

    pub(super) fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count(&self, n: u64) {
        self.requests
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    fn path(&self, key: &str) -> Result<ObjPath, Error> {
        let full = super::join(&self.prefix, key);
        ObjPath::parse(&full).map_err(|e| Error::Storage {
            op: "name",
            location: self.show(key),
            source: Box::new(e),
        })
    }

    fn show(&self, key: &str) -> String {
        format!("{}/{key}", self.url)
    }

    fn err(&self, op: &'static str, key: &str, e: object_store::Error) -> Error {
        Error::Storage {
            op,
            location: self.show(key),
            source: Box::new(e),
        }
    }

    fn key_of(&self, p: &ObjPath) -> String {
        let s = p.as_ref();
        if self.prefix.is_empty() {
            s.to_string()
        } else {
            s.strip_prefix(&self.prefix)
                .map(|r| r.trim_start_matches('/').to_string())
                .unwrap_or_else(|| s.to_string())
        }
    }

    pub(super) fn get(&self, key: &str) -> Result<Option<Bytes>, Error> {
        self.count(1);
        let (store, p) = (self.store.clone(), self.path(key)?);
        let r = block(async move {
            match store.get(&p).await {
                Ok(g) => g.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        r.map_err(|e| self.err("get", key, e))
    }

    pub(super) fn get_range(&self, key: &str, start: u64, len: u64) -> Result<Bytes, Error> {
        self.count(1);
        let (store, p) = (self.store.clone(), self.path(key)?);
        block(async move { store.get_range(&p, start..start + len).await })
            .map_err(|e| self.err("get range of", key, e))
    }

    pub(super) fn head(&self, key: &str) -> Result<Option<ObjectInfo>, Error> {
        self.count(1);
        let (store, p) = (self.store.clone(), self.path(key)?);
        let r = block(async move {
            match store.head(&p).await {
                Ok(m) => Ok(Some(m)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        Ok(r.map_err(|e| self.err("head", key, e))?
            .map(|m| ObjectInfo {
                key: key.to_string(),
                size: m.size,
                version: m.e_tag,
            }))
    }

    pub(super) fn put(&self, key: &str, bytes: &[u8]) -> Result<(), Error> {
        self.count(1);
        let (store, p) = (self.store.clone(), self.path(key)?);
        let payload = PutPayload::from(Bytes::copy_from_slice(bytes));
        crate::crash::point("object put, before");
        block(async move { store.put(&p, payload).await })
            .map(|_| ())
            .map_err(|e| self.err("put", key, e))?;
        crate::crash::point("object put, after");
        Ok(())
    }

    pub(super) fn put_file(&self, key: &str, file: &Path) -> Result<(), Error> {
        let size = std::fs::metadata(file)
            .map_err(|e| Error::io(file, e))?
            .len();
        let result = if size <= part_bytes() as u64 {
            let bytes = std::fs::read(file).map_err(|e| Error::io(file, e))?;
            self.put(key, &bytes)
        } else {
            self.put_multipart(key, file)
        };
        if result.is_ok() {
            let _ = std::fs::remove_file(file);
        }
        result
    }

    /// Streams `file` as a multipart upload in bounded parts (one part in
    /// memory at a time). The object appears only when the upload completes;
    /// a failed upload is aborted, and the upload is recorded while it runs
    /// so that one a killed process left is aborted by the next run
    /// ([`Object::abort_stale_uploads`]).
    fn put_multipart(&self, key: &str, file: &Path) -> Result<(), Error> {
        let (mp, p) = (self.multipart.clone(), self.path(key)?);
        let p2 = p.clone();
        let id = block(async move { mp.create_multipart(&p2).await })
            .map_err(|e| self.err("start upload of", key, e))?;
        let record_key = format!(
            "{UPLOADS_PREFIX}/{}-{}.json",
            std::process::id(),
            id.chars()
                .filter(char::is_ascii_alphanumeric)
                .take(40)
                .collect::<String>()
        );
        let record = serde_json::to_vec(&UploadRecord {
            key: key.to_string(),
            upload_id: id.clone(),
        })
        .map_err(|source| Error::Encode {
            what: "upload record",
            source,
        })?;
        self.put(&record_key, &record)?;
        let outcome = self.upload_parts(key, &p, &id, file).and_then(|parts| {
            let (mp, p2, id2) = (self.multipart.clone(), p.clone(), id.clone());
            block(async move { mp.complete_multipart(&p2, &id2, parts).await })
                .map(|_| ())
                .map_err(|e| self.err("complete upload of", key, e))
        });
        let settled = match &outcome {
            Ok(()) => true,
            Err(_) => {
                let (mp, p2, id2) = (self.multipart.clone(), p.clone(), id.clone());
                block(async move { mp.abort_multipart(&p2, &id2).await }).is_ok()
            }
        };
        // An upload that could not be aborted keeps its record: the next run
        // aborts it.
        if settled {
            let _ = self.delete(&record_key);
        }
        outcome
    }

    fn upload_parts(
        &self,
        key: &str,
        p: &ObjPath,
        id: &str,
        file: &Path,
    ) -> Result<Vec<PartId>, Error> {
        let mut f = std::fs::File::open(file).map_err(|e| Error::io(file, e))?;
        let mut parts = Vec::new();
        loop {
            let chunk = part_bytes();
            let mut buf = Vec::with_capacity(chunk);
            (&mut f)
                .take(chunk as u64)
                .read_to_end(&mut buf)
                .map_err(|e| Error::io(file, e))?;
            if buf.is_empty() && !parts.is_empty() {
                return Ok(parts);
            }
            let last = buf.len() < chunk;
            let (mp, p, id, idx) = (
                self.multipart.clone(),
                p.clone(),
                id.to_string(),
                parts.len(),
            );
            self.count(1);
            let part = block(async move {
                mp.put_part(&p, &id, idx, PutPayload::from(Bytes::from(buf)))
                    .await
            })
            .map_err(|e| self.err("upload part of", key, e))?;
            crate::crash::point("object upload part sent");
            parts.push(part);
            if last {
                return Ok(parts);
            }
        }
    }

    pub(super) fn put_create(&self, key: &str, bytes: &[u8]) -> Result<Option<ObjectInfo>, Error> {
        self.put_mode(key, bytes, PutMode::Create)
    }

    pub(super) fn put_update(
        &self,
        key: &str,
        bytes: &[u8],
        version: &str,
    ) -> Result<Option<ObjectInfo>, Error> {
        self.put_mode(
            key,
            bytes,
            PutMode::Update(UpdateVersion {
                e_tag: Some(version.to_string()),
                version: None,
            }),
        )
    }

    fn put_mode(
        &self,
        key: &str,
        bytes: &[u8],
        mode: PutMode,
    ) -> Result<Option<ObjectInfo>, Error> {
        self.count(1);
        let (store, p) = (self.store.clone(), self.path(key)?);
        let payload = PutPayload::from(Bytes::copy_from_slice(bytes));
        let opts = PutOptions {
            mode,
            ..PutOptions::default()
        };
        let r = block(async move { store.put_opts(&p, payload, opts).await });
        match r {
            Ok(res) => Ok(Some(ObjectInfo {
                key: key.to_string(),
                size: bytes.len() as u64,
                version: res.e_tag,
            })),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. }
                | object_store::Error::NotFound { .. },
            ) => Ok(None),
            Err(e) => Err(self.err("conditional put", key, e)),
        }
    }

    pub(super) fn delete(&self, key: &str) -> Result<bool, Error> {
        self.count(2);
        let (store, p) = (self.store.clone(), self.path(key)?);
        let r = block(async move {
            match store.head(&p).await {
                Ok(_) => store.delete(&p).await.map(|_| true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(e),
            }
        });
        r.map_err(|e| self.err("delete", key, e))
    }

    pub(super) fn copy(&self, from: &str, to: &str) -> Result<(), Error> {
        self.count(1);
        let (store, a, b) = (self.store.clone(), self.path(from)?, self.path(to)?);
        block(async move { store.copy(&a, &b).await })
            .map_err(|e| self.err("copy", &format!("{from} -> {to}"), e))
    }

    pub(super) fn list_dir(&self, prefix: &str) -> Result<Listing, Error> {
        self.count(1);
        let (store, p) = (self.store.clone(), self.path(prefix)?);
        let r = block(async move { store.list_with_delimiter(Some(&p)).await })
            .map_err(|e| self.err("list", prefix, e))?;
        let mut out = Listing::default();
        for o in r.objects {
            if let Some(name) = o.location.filename() {
                out.files.push((name.to_string(), o.size));
            }
        }
        for d in r.common_prefixes {
            if let Some(name) = d.filename() {
                out.dirs.push(name.to_string());
            }
        }
        out.files.sort();
        out.dirs.sort();
        Ok(out)
    }

    pub(super) fn list_recursive(&self, prefix: &str) -> Result<Vec<ObjectInfo>, Error> {
        self.count(1);
        let (store, p) = (self.store.clone(), self.path(prefix)?);
        let metas = block(async move {
            let mut s = store.list(Some(&p));
            let mut v = Vec::new();
            while let Some(m) = s.next().await {
                v.push(m?);
            }
            Ok::<_, object_store::Error>(v)
        })
        .map_err(|e| self.err("list", prefix, e))?;
        let mut out: Vec<ObjectInfo> = metas
            .into_iter()
            .map(|m| ObjectInfo {
                key: self.key_of(&m.location),
                size: m.size,
                version: m.e_tag,
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    pub(super) fn scratch_dir(&self) -> Result<PathBuf, Error> {
        if let Some(d) = self.scratch.get() {
            return Ok(d.path().to_path_buf());
        }
        let base = std::env::var_os("STATBANK_STAGING_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&base).map_err(|e| Error::io(&base, e))?;
        let dir = tempfile::Builder::new()
            .prefix(".tmp-statbank-staging-")
            .tempdir_in(&base)
            .map_err(|e| Error::io(&base, e))?;
        let _ = self.scratch.set(dir);
        self.scratch
            .get()
            .map(|d| d.path().to_path_buf())
            .ok_or_else(|| Error::io(&base, std::io::Error::other("no staging folder")))
    }

    /// Aborts every multipart upload recorded under [`UPLOADS_PREFIX`]:
    /// called while holding the data folder's lock, so each was left by a
    /// process that died (or failed to abort). Returns how many.
    pub(super) fn abort_stale_uploads(&self) -> Result<usize, Error> {
        let mut n = 0;
        for obj in self.list_recursive(UPLOADS_PREFIX)? {
            let Some(bytes) = self.get(&obj.key)? else {
                continue;
            };
            if let Ok(r) = serde_json::from_slice::<UploadRecord>(&bytes) {
                let (mp, p, id) = (self.multipart.clone(), self.path(&r.key)?, r.upload_id);
                match block(async move { mp.abort_multipart(&p, &id).await }) {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => n += 1,
                    Err(e) => {
                        tracing::warn!(key = %r.key, error = %e, "cannot abort an abandoned upload");
                        continue;
                    }
                }
            }
            self.delete(&obj.key)?;
        }
        Ok(n)
    }
}

type Stores = (Arc<dyn ObjectStore>, Arc<dyn MultipartStore>);

fn both<S: ObjectStore + MultipartStore>(s: S) -> Stores {
    let s = Arc::new(s);
    (s.clone(), s)
}

/// Retries of one store request: 5 with exponential backoff from 100 ms,
/// within 60 s (the crate's default of 10 within 3 minutes would hold a
/// table for minutes on a key that keeps failing). The options
/// `max_retries` and `retry_timeout_secs` change them.
fn retry_config(options: &[(String, String)]) -> object_store::RetryConfig {
    let get = |k: &str| {
        options
            .iter()
            .find(|(key, _)| key == k)
            .and_then(|(_, v)| v.trim().parse::<u64>().ok())
    };
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig::default(),
        max_retries: get("max_retries").map_or(5, |n| n as usize),
        retry_timeout: std::time::Duration::from_secs(get("retry_timeout_secs").unwrap_or(60)),
    }
}

/// Options of the store crate itself (not the retry settings above).
fn store_options(options: &[(String, String)]) -> impl Iterator<Item = &(String, String)> {
    options
        .iter()
        .filter(|(k, _)| k != "max_retries" && k != "retry_timeout_secs")
}

/// The builder for `scheme`, configured from the environment, the URL and
/// then `options` (keys as `object_store` names them: `aws_endpoint`,
/// `aws_access_key_id`, `google_service_account`, `azure_storage_account_name`…).
fn build(scheme: &str, url: &str, options: &[(String, String)]) -> Result<Stores, String> {
    let retry = retry_config(options);
    match scheme {
        #[cfg(feature = "s3")]
        "s3" | "s3a" => {
            let mut b = object_store::aws::AmazonS3Builder::from_env()
                .with_url(url)
                .with_retry(retry);
            for (k, v) in store_options(options) {
                b = b.with_config(k.parse().map_err(|e| format!("option {k}: {e}"))?, v);
            }
            b.build().map(both).map_err(|e| e.to_string())
        }
        #[cfg(feature = "gcs")]
        "gs" => {
            let mut b = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_url(url)
                .with_retry(retry);
            for (k, v) in store_options(options) {
                b = b.with_config(k.parse().map_err(|e| format!("option {k}: {e}"))?, v);
            }
            b.build().map(both).map_err(|e| e.to_string())
        }
        #[cfg(feature = "azure")]
        "az" | "abfs" | "abfss" | "azure" | "adl" => {
            let mut b = object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_url(url)
                .with_retry(retry);
            for (k, v) in store_options(options) {
                b = b.with_config(k.parse().map_err(|e| format!("option {k}: {e}"))?, v);
            }
            b.build().map(both).map_err(|e| e.to_string())
        }
        other => {
            let _ = (url, retry);
            Err(format!(
                "this build has no {other}:// backend (cargo features s3, gcs, azure)"
            ))
        }
    }
}
