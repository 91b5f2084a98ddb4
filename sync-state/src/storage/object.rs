//! The object-store backend (S3, GCS, Azure through the `object_store`
//! crate). Calls run on a small runtime of their own and are waited for on
//! the caller's thread, so the storage interface stays synchronous.

use std::future::Future;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::path::Path as ObjPath;
use object_store::{
    ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion, WriteMultipart,
};

use super::{Listing, ObjectInfo};
use crate::Error;

/// Files up to this size are uploaded with one PUT; larger ones as a
/// multipart upload of parts this size, at most [`UPLOAD_PARTS_IN_FLIGHT`]
/// parts in memory at once.
const PART_BYTES: usize = 8 * 1024 * 1024;
const UPLOAD_PARTS_IN_FLIGHT: usize = 2;

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
    store: Arc<dyn ObjectStore>,
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
    pub(super) fn from_url(location: &str) -> Result<Object, Error> {
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
        let store = build(&scheme.to_ascii_lowercase(), location).map_err(unsupported)?;
        Ok(Object {
            store,
            prefix,
            url: location.trim_end_matches('/').to_string(),
            scratch: Arc::new(OnceLock::new()),
        })
    }

    pub(super) fn url(&self) -> &str {
        &self.url
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
        let (store, p) = (self.store.clone(), self.path(key)?);
        block(async move { store.get_range(&p, start..start + len).await })
            .map_err(|e| self.err("get range of", key, e))
    }

    pub(super) fn head(&self, key: &str) -> Result<Option<ObjectInfo>, Error> {
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
        let (store, p) = (self.store.clone(), self.path(key)?);
        let payload = PutPayload::from(Bytes::copy_from_slice(bytes));
        block(async move { store.put(&p, payload).await })
            .map(|_| ())
            .map_err(|e| self.err("put", key, e))
    }

    pub(super) fn put_file(&self, key: &str, file: &Path) -> Result<(), Error> {
        let size = std::fs::metadata(file)
            .map_err(|e| Error::io(file, e))?
            .len();
        let result = if size <= PART_BYTES as u64 {
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

    /// Streams `file` as a multipart upload in bounded parts; the object
    /// appears only when the upload completes, and a failed upload is
    /// aborted (no partial object, no orphaned parts).
    fn put_multipart(&self, key: &str, file: &Path) -> Result<(), Error> {
        let (store, p) = (self.store.clone(), self.path(key)?);
        let mut f = std::fs::File::open(file).map_err(|e| Error::io(file, e))?;
        let upload = block(async move { store.put_multipart(&p).await })
            .map_err(|e| self.err("start upload of", key, e))?;
        let mut writer = Some(WriteMultipart::new_with_chunk_size(upload, PART_BYTES));
        let mut buf = vec![0u8; PART_BYTES];
        let outcome: Result<(), Error> = loop {
            let n = match f.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) => break Err(Error::io(file, e)),
            };
            let Some(mut w) = writer.take() else {
                break Ok(());
            };
            w.write(&buf[..n]);
            crate::crash::point("object upload part queued");
            let (w, r) = block(async move {
                let r = w.wait_for_capacity(UPLOAD_PARTS_IN_FLIGHT).await;
                (w, r)
            });
            writer = Some(w);
            if let Err(e) = r {
                break Err(self.err("upload part of", key, e));
            }
        };
        let Some(w) = writer else {
            return outcome;
        };
        match outcome {
            Ok(()) => block(async move { w.finish().await })
                .map(|_| ())
                .map_err(|e| self.err("complete upload of", key, e)),
            Err(e) => {
                let _ = block(async move { w.abort().await });
                Err(e)
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
        let (store, a, b) = (self.store.clone(), self.path(from)?, self.path(to)?);
        block(async move { store.copy(&a, &b).await })
            .map_err(|e| self.err("copy", &format!("{from} -> {to}"), e))
    }

    pub(super) fn list_dir(&self, prefix: &str) -> Result<Listing, Error> {
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

    pub(super) fn abort_stale_uploads(
        &self,
        prefix: &str,
        older_than: std::time::Duration,
    ) -> Result<usize, Error> {
        // `object_store` has no portable listing of in-progress uploads; S3
        // buckets should carry the standard lifecycle rule
        // (AbortIncompleteMultipartUpload), documented in README. Uploads
        // this process starts are aborted on every error path.
        let _ = (prefix, older_than);
        Ok(0)
    }
}

fn build(scheme: &str, url: &str) -> Result<Arc<dyn ObjectStore>, String> {
    match scheme {
        #[cfg(feature = "s3")]
        "s3" | "s3a" => object_store::aws::AmazonS3Builder::from_env()
            .with_url(url)
            .build()
            .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
            .map_err(|e| e.to_string()),
        #[cfg(feature = "gcs")]
        "gs" => object_store::gcp::GoogleCloudStorageBuilder::from_env()
            .with_url(url)
            .build()
            .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
            .map_err(|e| e.to_string()),
        #[cfg(feature = "azure")]
        "az" | "abfs" | "abfss" | "azure" | "adl" => {
            object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_url(url)
                .build()
                .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
                .map_err(|e| e.to_string())
        }
        other => {
            let _ = url;
            Err(format!(
                "this build has no {other}:// backend (cargo features s3, gcs, azure)"
            ))
        }
    }
}
