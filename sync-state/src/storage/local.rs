//! The local-folder backend: temp file in the same folder, fsync, rename,
//! fsync of the folder.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{Listing, ObjectInfo};
use crate::{fsio, Error};

#[derive(Debug, Clone)]
pub(super) struct Local {
    root: PathBuf,
}

fn not_found(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound
}

impl Local {
    pub(super) fn new(root: PathBuf) -> Local {
        Local { root }
    }

    pub(super) fn root(&self) -> &Path {
        &self.root
    }

    pub(super) fn path(&self, key: &str) -> PathBuf {
        if key.is_empty() {
            self.root.clone()
        } else {
            self.root.join(key)
        }
    }

    pub(super) fn get(&self, key: &str) -> Result<Option<Bytes>, Error> {
        let p = self.path(key);
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(Bytes::from(b))),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(Error::io(p, e)),
        }
    }

    pub(super) fn get_range(&self, key: &str, start: u64, len: u64) -> Result<Bytes, Error> {
        let p = self.path(key);
        let mut f = std::fs::File::open(&p).map_err(|e| Error::io(&p, e))?;
        f.seek(SeekFrom::Start(start))
            .map_err(|e| Error::io(&p, e))?;
        let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        f.take(len)
            .read_to_end(&mut buf)
            .map_err(|e| Error::io(&p, e))?;
        Ok(Bytes::from(buf))
    }

    pub(super) fn head(&self, key: &str) -> Result<Option<ObjectInfo>, Error> {
        let p = self.path(key);
        match std::fs::metadata(&p) {
            Ok(m) if m.is_file() => Ok(Some(ObjectInfo {
                key: key.to_string(),
                size: m.len(),
                version: None,
            })),
            Ok(_) => Ok(None),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(Error::io(p, e)),
        }
    }

    pub(super) fn put(&self, key: &str, bytes: &[u8]) -> Result<(), Error> {
        fsio::write_atomic(&self.path(key), bytes)
    }

    pub(super) fn put_file(&self, key: &str, file: &Path) -> Result<(), Error> {
        let dest = self.path(key);
        let dir = parent(&dest);
        fsio::make_readable(file)?;
        crate::crash::point("partition before rename");
        std::fs::rename(file, &dest).map_err(|e| Error::io(&dest, e))?;
        crate::crash::point("partition after rename");
        fsio::sync_dir(dir)
    }

    pub(super) fn put_create(&self, key: &str, bytes: &[u8]) -> Result<Option<ObjectInfo>, Error> {
        let dest = self.path(key);
        let dir = parent(&dest);
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let tmp = fsio::write_temp(dir, bytes)?;
        // A hard link fails when the name exists: create-only, and the
        // content is complete the moment the name appears.
        let linked = std::fs::hard_link(tmp.path(), &dest);
        drop(tmp);
        match linked {
            Ok(()) => {
                fsio::sync_dir(dir)?;
                Ok(Some(ObjectInfo {
                    key: key.to_string(),
                    size: bytes.len() as u64,
                    version: None,
                }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(Error::io(dest, e)),
        }
    }

    pub(super) fn put_update(
        &self,
        key: &str,
        bytes: &[u8],
        _version: &str,
    ) -> Result<Option<ObjectInfo>, Error> {
        // Local folders are locked with flock, not leases; a plain replace.
        self.put(key, bytes)?;
        self.head(key)
    }

    pub(super) fn delete(&self, key: &str) -> Result<bool, Error> {
        let p = self.path(key);
        match std::fs::remove_file(&p) {
            Ok(()) => {
                fsio::sync_dir(parent(&p))?;
                Ok(true)
            }
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(Error::io(p, e)),
        }
    }

    pub(super) fn copy(&self, from: &str, to: &str) -> Result<(), Error> {
        let (src, dest) = (self.path(from), self.path(to));
        let dir = parent(&dest);
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        // Link under a temp name, then rename over `to`: atomic replace.
        let tmp = fsio::temp_name(dir);
        if std::fs::hard_link(&src, &tmp).is_err() {
            std::fs::copy(&src, &tmp).map_err(|e| Error::io(&src, e))?;
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::rename(&tmp, &dest).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(&dest, e)
        })?;
        fsio::sync_dir(dir)
    }

    pub(super) fn rename(&self, from: &str, to: &str) -> Result<(), Error> {
        let (src, dest) = (self.path(from), self.path(to));
        let dir = parent(&dest);
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        std::fs::rename(&src, &dest).map_err(|e| Error::io(&src, e))?;
        fsio::sync_dir(dir)?;
        fsio::sync_dir(parent(&src))
    }

    pub(super) fn list_dir(&self, prefix: &str) -> Result<Listing, Error> {
        let dir = self.path(prefix);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if not_found(&e) => return Ok(Listing::default()),
            Err(e) => return Err(Error::io(dir, e)),
        };
        let mut out = Listing::default();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                out.dirs.push(name);
            } else if ft.is_file() {
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                out.files.push((name, size));
            }
        }
        out.files.sort();
        out.dirs.sort();
        Ok(out)
    }

    pub(super) fn list_recursive(&self, prefix: &str) -> Result<Vec<ObjectInfo>, Error> {
        let mut out = Vec::new();
        let mut stack = vec![prefix.trim_end_matches('/').to_string()];
        while let Some(p) = stack.pop() {
            let l = self.list_dir(&p)?;
            for (name, size) in l.files {
                out.push(ObjectInfo {
                    key: super::join(&p, &name),
                    size,
                    version: None,
                });
            }
            stack.extend(l.dirs.iter().map(|d| super::join(&p, d)));
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    pub(super) fn exchange_dirs(&self, a: &str, b: &str) -> Result<(), Error> {
        let (pa, pb) = (self.path(a), self.path(b));
        if let Some(parent) = pb.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let exists = pb.try_exists().map_err(|e| Error::io(&pb, e))?;
        if exists {
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                &pa,
                rustix::fs::CWD,
                &pb,
                rustix::fs::RenameFlags::EXCHANGE,
            )
            .map_err(|e| Error::io(&pb, std::io::Error::from(e)))?;
        } else {
            std::fs::rename(&pa, &pb).map_err(|e| Error::io(&pb, e))?;
        }
        fsio::sync_dir(parent(&pa))?;
        fsio::sync_dir(parent(&pb))
    }

    pub(super) fn delete_prefix(&self, prefix: &str) -> Result<usize, Error> {
        let p = self.path(prefix);
        if prefix.is_empty() {
            return Err(Error::io(
                p,
                std::io::Error::other("refusing to delete the data folder"),
            ));
        }
        let n = self.list_recursive(prefix)?.len();
        match std::fs::remove_dir_all(&p) {
            Ok(()) => {
                fsio::sync_dir(parent(&p))?;
                Ok(n)
            }
            Err(e) if not_found(&e) => Ok(0),
            Err(e) => Err(Error::io(p, e)),
        }
    }

    pub(super) fn remove_dir(&self, prefix: &str) -> Result<(), Error> {
        let p = self.path(prefix);
        fsio::clean_temp_files(&p);
        match std::fs::remove_dir(&p) {
            Ok(()) => fsio::sync_dir(parent(&p)),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(Error::io(p, e)),
        }
    }
}

fn parent(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}
