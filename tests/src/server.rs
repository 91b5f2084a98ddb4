//! What the test servers started by `tests::s3` and `tests::azure` share:
//! finding a tool on `PATH`, a free loopback port, a scratch folder, a
//! watchdog that stops the server with the test process, unique locations.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

/// `tool` on `PATH`.
pub(crate) fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(tool))
            .find(|p| p.is_file())
    })
}

/// A free loopback port and a fresh scratch folder named after `kind`.
pub(crate) fn port_and_dir(kind: &str) -> Result<(u16, PathBuf)> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let dir = std::env::temp_dir().join(format!(
        "statbank-test-{kind}-{}-{port}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok((port, dir))
}

/// Runs `cmd` (a shell command line) under a watchdog shell that stops it
/// (TERM, then KILL after 10 s: SeaweedFS can hang in its shutdown), and
/// removes `dir`, when this test process is gone. Output goes to
/// `dir.log` (removed with `dir`).
pub(crate) fn spawn_watched(cmd: &str, dir: &Path, env: &[(&str, &str)]) -> Result<()> {
    let script = format!(
        "{cmd} >'{log}' 2>&1 & srv=$!; while kill -0 {me} 2>/dev/null && kill -0 $srv 2>/dev/null; do sleep 1; done; kill $srv 2>/dev/null; n=0; while kill -0 $srv 2>/dev/null && [ $n -lt 10 ]; do sleep 1; n=$((n+1)); done; kill -9 $srv 2>/dev/null; rm -rf '{dir}' '{log}'",
        log = dir.with_extension("log").display(),
        me = std::process::id(),
        dir = dir.display()
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {cmd}"))?;
    Ok(())
}

/// A fresh, unique `scheme://bucket/<name>-<unique>` location.
pub(crate) fn unique_url(scheme: &str, bucket: &str, name: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{scheme}://{bucket}/{name}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
