//! Atomic, durable file writes for the JSON records (temp file + fsync + rename
//! + fsync of the folder) and strict reads that name the file on error.

use std::io::Write;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::Error;

/// Names of the temp files [`write_atomic`] creates: `.tmp-<random>.json.tmp`.
const TEMP_PREFIX: &str = ".tmp-";
const TEMP_SUFFIX: &str = ".json.tmp";

/// Removes the temp files [`write_atomic`] left in `dir` when a process died
/// before renaming them; returns how many. A missing folder has none.
pub fn clean_temp_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX)
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

/// Writes `bytes` to `path` atomically and durably: a temp file in the same
/// folder, `fsync`, rename over `path`, `fsync` of the folder. A reader sees
/// the old file or the new one, never a mix. Creates the folder if needed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
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
    crate::crash::point("json written, before rename");
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    crate::crash::point("json renamed, before folder fsync");
    sync_dir(dir)
}

/// Serialises `value` as pretty JSON and writes it with [`write_atomic`].
pub fn write_json_atomic<T: Serialize>(
    path: &Path,
    what: &'static str,
    value: &T,
) -> Result<(), Error> {
    let mut bytes =
        serde_json::to_vec_pretty(value).map_err(|source| Error::Encode { what, source })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Reads a JSON file; `Ok(None)` when it does not exist, [`Error::Corrupt`]
/// (naming the file) when it does not parse.
pub fn read_json<T: DeserializeOwned>(path: &Path, what: &'static str) -> Result<Option<T>, Error> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| Error::Corrupt {
            what,
            path: path.to_path_buf(),
            source,
        })
}

/// `fsync` of a folder, so a rename inside it survives a power cut.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
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
