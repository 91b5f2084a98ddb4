//! Reading a stored partition's bytes: the file itself on a local folder,
//! ranged GETs on an object store (a footer costs one or two small
//! requests, never a download of the whole object).

use std::fs::File;

use bytes::{Buf, Bytes};
use parquet::errors::ParquetError;
use parquet::file::reader::{ChunkReader, Length};
use sync_state::Storage;

use crate::Error;

/// A stored object read through [`Storage::get_range`].
pub(crate) struct ObjectSource {
    storage: Storage,
    key: String,
    len: u64,
}

impl ObjectSource {
    /// The object at `key` of `len` bytes (known from a listing: no HEAD).
    pub(crate) fn new(storage: &Storage, key: &str, len: u64) -> ObjectSource {
        ObjectSource {
            storage: storage.clone(),
            key: key.to_string(),
            len,
        }
    }
}

impl Length for ObjectSource {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for ObjectSource {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        let len = usize::try_from(self.len.saturating_sub(start))
            .map_err(|e| ParquetError::External(Box::new(e)))?;
        Ok(self.get_bytes(start, len)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.storage
            .get_range(&self.key, start, length as u64)
            .map_err(|e| ParquetError::External(Box::new(e)))
    }
}

/// Where a stored partition's bytes come from.
pub(crate) enum Source {
    File(File),
    Object(ObjectSource),
}

/// Opens `key` for reading; `Ok(None)` when it does not exist.
pub(crate) fn open(storage: &Storage, key: &str) -> Result<Option<Source>, Error> {
    if let Some(root) = storage.local_root() {
        let path = root.join(key);
        return match File::open(&path) {
            Ok(f) if f.metadata().map(|m| m.is_file()).unwrap_or(false) => {
                Ok(Some(Source::File(f)))
            }
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        };
    }
    Ok(storage
        .head(key)?
        .map(|info| Source::Object(ObjectSource::new(storage, key, info.size))))
}
