//! Atomic, durable file writes for the JSON records (temp file + fsync + rename
//! + fsync of the folder) and strict reads that name the file on error.

use std::io::Write;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::Error;

pub use crate::paths::TEMP_PREFIX;
const TEMP_SUFFIX: &str = ".tmp";

/// Removes the temp files (`.tmp-*`) left in `dir` when a process died
/// before renaming them; returns how many. A missing folder has none. Call it
/// only while holding the data folder's lock.
pub fn clean_temp_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with(TEMP_PREFIX) && e.file_type().is_ok_and(|t| t.is_file())
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

/// The folder of `path`; `.` for a bare file name (`m.prom`).
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// A complete, fsynced temp file in `dir` holding `bytes` (mode 0644);
/// removed when dropped unless persisted.
pub fn write_temp(dir: &Path, bytes: &[u8]) -> Result<tempfile::NamedTempFile, Error> {
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .suffix(TEMP_SUFFIX)
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    crate::crash::point("json temp file created");
    tmp.write_all(bytes).map_err(|e| Error::io(tmp.path(), e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io(tmp.path(), e))?;
    make_readable(tmp.path())?;
    Ok(tmp)
}

/// A fresh temp-file name in `dir` (nothing is created).
pub fn temp_name(dir: &Path) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(
        "{TEMP_PREFIX}{}-{n}{TEMP_SUFFIX}",
        std::process::id()
    ))
}

/// Mode 0644: temp files are created 0600, but a published file must be
/// readable by other users (node_exporter's textfile collector, readers of
/// the mirror) as any normally created file would be.
pub fn make_readable(path: &Path) -> Result<(), Error> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| Error::io(path, e))?;
    }
    let _ = path;
    Ok(())
}

/// Writes `bytes` to `path` atomically and durably: a temp file in the same
/// folder, `fsync`, rename over `path`, `fsync` of the folder. A reader sees
/// the old file or the new one, never a mix. Creates the folder if needed;
/// the file gets mode 0644.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = folder_of(path);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = write_temp(dir, bytes)?;
    crate::crash::point("json written, before rename");
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    crate::crash::point("json renamed, before folder fsync");
    sync_dir(dir)
}

/// Publishes a complete, fsynced temp file at `path` (mode 0644): rename
/// over `path`, `fsync` of its folder. For files written elsewhere (an
/// export out of the data folder); the temp file must be in `path`'s
/// folder (or on its file system) for the rename to be atomic.
pub fn persist(temp: tempfile::TempPath, path: &Path) -> Result<(), Error> {
    make_readable(&temp)?;
    temp.persist(path).map_err(|e| Error::io(path, e.error))?;
    sync_dir(folder_of(path))
}

/// Serialises `value` as pretty JSON and writes it with [`write_atomic`].
pub fn write_json_atomic<T: Serialize>(
    path: &Path,
    what: &'static str,
    value: &T,
) -> Result<(), Error> {
    write_atomic(path, &encode_json(value, what)?)
}

/// Reads a JSON file; `Ok(None)` when it does not exist, [`Error::Corrupt`]
/// (naming the file) when it does not parse.
pub fn read_json<T: DeserializeOwned>(path: &Path, what: &'static str) -> Result<Option<T>, Error> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    decode_json(&bytes, what, &path.display().to_string()).map(Some)
}

/// Decodes a JSON record; [`Error::Corrupt`] names `location` when it does
/// not parse.
pub fn decode_json<T: DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
    location: &str,
) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|source| Error::Corrupt {
        what,
        path: location.into(),
        source,
    })
}

/// Encodes a record as pretty JSON with a final newline.
pub fn encode_json<T: Serialize>(value: &T, what: &'static str) -> Result<Vec<u8>, Error> {
    let mut bytes =
        serde_json::to_vec_pretty(value).map_err(|source| Error::Encode { what, source })?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// `fsync` of a folder, so a rename inside it survives a power cut.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let f = std::fs::File::open(dir).map_err(|e| Error::io(dir, e))?;
    f.sync_all().map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("sub").join("x.json");
        write_json_atomic(&p, "test", &serde_json::json!({"a": 1})).expect("write");
        write_json_atomic(&p, "test", &serde_json::json!({"a": 2})).expect("write");
        let v: serde_json::Value = read_json(&p, "test").expect("read").expect("exists");
        assert_eq!(v["a"], 2);
        let names: Vec<_> = std::fs::read_dir(p.parent().expect("parent"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x.json")]);
    }

    #[test]
    fn corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("state.json");
        std::fs::write(&p, b"{\"tables\": {").expect("write");
        let err = read_json::<serde_json::Value>(&p, "state").expect_err("corrupt");
        assert!(err.to_string().contains("state.json"), "{err}");
        assert!(
            read_json::<serde_json::Value>(&dir.path().join("nope.json"), "state")
                .expect("missing is fine")
                .is_none()
        );
    }
}
