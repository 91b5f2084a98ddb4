//! The Postgres test harness every database test uses.
//!
//! [`test_db`] finds a server, in this order:
//!
//! 1. `DATABASE_URL` when set (this machine and CI:
//!    `postgres://postgres@127.0.0.1:5432/test`, trust auth);
//! 2. a throw-away Postgres container (testcontainers) when a Docker daemon
//!    is reachable;
//! 3. a throw-away cluster from locally installed binaries (`initdb`,
//!    `pg_ctl` under `/usr/lib/postgresql/*/bin`, run as user `postgres` when
//!    the tests run as root) on a free port in a temp folder;
//!
//! and otherwise fails with a message naming the three options — a missing
//! database is always a failure, never a skip (in CI too).
//!
//! Each [`TestDb`] is its own fresh database (`CREATE DATABASE test_<random>`),
//! dropped `WITH (FORCE)` when the `TestDb` is dropped, so tests run in
//! parallel (the fact tables all live in schema `fact`) and leave nothing
//! behind. A container or local cluster is shared by the tests of a process
//! that overlap in time and stopped when the last of them ends.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};

/// A fresh database for one test, dropped on drop.
pub struct TestDb {
    url: String,
    admin_url: String,
    name: String,
    _server: Option<Arc<Server>>,
}

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDb").field("name", &self.name).finish()
    }
}

impl TestDb {
    /// Connection URL of this test's database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Name of this test's database.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A new connection to this test's database.
    pub fn client(&self) -> Result<postgres::Client> {
        postgres::Client::connect(&self.url, postgres::NoTls)
            .with_context(|| format!("connecting to test database {}", self.name))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let result =
            postgres::Client::connect(&self.admin_url, postgres::NoTls).and_then(|mut c| {
                c.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                    self.name
                ))
            });
        if let Err(e) = result {
            eprintln!("warning: could not drop test database {}: {e}", self.name);
        }
    }
}

/// A server started for the tests (container or local cluster).
enum Server {
    Container {
        url: String,
        _container: Box<
            testcontainers_modules::testcontainers::Container<
                testcontainers_modules::postgres::Postgres,
            >,
        >,
    },
    Local(LocalCluster),
}

impl Server {
    fn admin_url(&self) -> String {
        match self {
            Server::Container { url, .. } => url.clone(),
            Server::Local(c) => c.url(),
        }
    }
}

static SERVER: Mutex<Weak<Server>> = Mutex::new(Weak::new());

/// A fresh database on the first server found (see the module docs).
pub fn test_db() -> Result<TestDb> {
    if let Some(url) = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
        announce(&format!(
            "DATABASE_URL ({})",
            bins::redact::DatabaseUrl::new(url.as_str())
        ));
        return create_db(&url, None).context("creating a test database on DATABASE_URL");
    }
    let server = shared_server()?;
    let admin = server.admin_url();
    announce(&match &*server {
        Server::Local(_) => format!(
            "a local initdb cluster ({})",
            bins::redact::DatabaseUrl::new(admin.as_str())
        ),
        _ => format!(
            "a testcontainers Postgres ({})",
            bins::redact::DatabaseUrl::new(admin.as_str())
        ),
    });
    create_db(&admin, Some(server))
}

/// Says once per test process which Postgres the tests use.
fn announce(what: &str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| eprintln!("tests use Postgres from {what}"));
}

fn shared_server() -> Result<Arc<Server>> {
    let mut slot = SERVER
        .lock()
        .map_err(|_| anyhow!("test server lock poisoned"))?;
    if let Some(s) = slot.upgrade() {
        return Ok(s);
    }
    let mut tried = Vec::new();
    match start_container() {
        Ok(Some(s)) => {
            let s = Arc::new(s);
            *slot = Arc::downgrade(&s);
            return Ok(s);
        }
        Ok(None) => tried.push("no Docker daemon reachable for testcontainers".to_string()),
        Err(e) => tried.push(format!("testcontainers failed: {e:#}")),
    }
    match LocalCluster::start() {
        Ok(c) => {
            let s = Arc::new(Server::Local(c));
            *slot = Arc::downgrade(&s);
            Ok(s)
        }
        Err(e) => {
            tried.push(format!("local cluster failed: {e:#}"));
            bail!(
                "no Postgres for the tests{}: set DATABASE_URL (e.g. \
                 postgres://postgres@127.0.0.1:5432/test), or make a Docker daemon \
                 reachable for testcontainers, or install Postgres server binaries \
                 (initdb, pg_ctl under /usr/lib/postgresql/*/bin). Tried: {}",
                if std::env::var_os("CI").is_some() {
                    " (CI is set: a missing database is a failure)"
                } else {
                    ""
                },
                tried.join("; ")
            )
        }
    }
}

/// Creates `test_<random>` on the server at `admin_url`.
fn create_db(admin_url: &str, server: Option<Arc<Server>>) -> Result<TestDb> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!(
        "test_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    );
    let mut admin = postgres::Client::connect(admin_url, postgres::NoTls)
        .with_context(|| format!("connecting to {}", redact(admin_url)))?;
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .with_context(|| format!("creating database {name}"))?;
    Ok(TestDb {
        url: with_dbname(admin_url, &name),
        admin_url: admin_url.to_owned(),
        name,
        _server: server,
    })
}

/// The same connection string pointing at database `db`.
pub fn with_dbname(url: &str, db: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let (base, query) = match url.find('?') {
            Some(q) => (&url[..q], &url[q..]),
            None => (url, ""),
        };
        let after = scheme_end + 3;
        let path_start = base[after..].find('/').map(|i| after + i);
        let host_part = match path_start {
            Some(p) => &base[..p],
            None => base,
        };
        format!("{host_part}/{db}{query}")
    } else {
        format!("{url} dbname={db}")
    }
}

/// The URL with any password replaced by `***`.
pub fn redact(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let after = scheme_end + 3;
        let authority_end = url[after..]
            .find(['/', '?'])
            .map(|i| after + i)
            .unwrap_or(url.len());
        if let Some(at) = url[after..authority_end].rfind('@').map(|i| after + i) {
            if let Some(colon) = url[after..at].find(':').map(|i| after + i) {
                return format!("{}***{}", &url[..colon + 1], &url[at..]);
            }
        }
        url.to_owned()
    } else {
        url.split_whitespace()
            .map(|kv| {
                if kv.starts_with("password=") {
                    "password=***"
                } else {
                    kv
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn docker_reachable() -> bool {
    if std::env::var_os("DOCKER_HOST").is_some() {
        return true;
    }
    let sock = Path::new("/var/run/docker.sock");
    sock.exists()
        && Command::new("docker")
            .args(["version", "--format", "{{.Server.Version}}"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
}

fn start_container() -> Result<Option<Server>> {
    use testcontainers_modules::postgres::Postgres;
    use testcontainers_modules::testcontainers::runners::SyncRunner;
    use testcontainers_modules::testcontainers::ImageExt;
    if !docker_reachable() {
        return Ok(None);
    }
    let container = Postgres::default()
        .with_host_auth()
        .with_tag("16-alpine")
        .start()
        .context("starting a postgres:16-alpine container")?;
    let host = container.get_host().context("container host")?;
    let port = container
        .get_host_port_ipv4(5432)
        .context("container port")?;
    Ok(Some(Server::Container {
        url: format!("postgres://postgres@{host}:{port}/postgres"),
        _container: Box::new(container),
    }))
}

/// A throw-away cluster from the locally installed server binaries.
struct LocalCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl LocalCluster {
    fn start() -> Result<LocalCluster> {
        let bin = find_pg_bin().ok_or_else(|| {
            anyhow!("no initdb/pg_ctl found under /usr/lib/postgresql/*/bin or on PATH")
        })?;
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("statbank-test-pg-")
            .tempdir()
            .context("creating a temp folder for the cluster")?;
        if as_postgres {
            let out = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .output()
                .context("chown of the cluster folder to postgres")?;
            if !out.status.success() {
                bail!(
                    "chown to postgres failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let mut cluster = LocalCluster {
            dir,
            bin,
            port: 0,
            as_postgres,
        };
        let data = cluster.data_dir();
        cluster.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-A".as_ref(),
                "trust".as_ref(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--no-sync".as_ref(),
            ],
        )?;
        // A port can be taken between probing and binding: retry a few times.
        let mut last = None;
        for _ in 0..5 {
            let port = free_port()?;
            cluster.port = port;
            let opts = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                cluster.dir.path().display()
            );
            let log = cluster.dir.path().join("server.log");
            match cluster.run(
                "pg_ctl",
                &[
                    "-D".as_ref(),
                    data.as_os_str(),
                    "-l".as_ref(),
                    log.as_os_str(),
                    "-o".as_ref(),
                    opts.as_ref(),
                    "-w".as_ref(),
                    "-t".as_ref(),
                    "60".as_ref(),
                    "start".as_ref(),
                ],
            ) {
                Ok(()) => return Ok(cluster),
                Err(e) => {
                    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
                    last = Some(e.context(log_text));
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("pg_ctl start failed")))
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn run(&self, tool: &str, args: &[&std::ffi::OsStr]) -> Result<()> {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args).current_dir(self.dir.path());
        let out = cmd
            .output()
            .with_context(|| format!("running {}", exe.display()))?;
        if !out.status.success() {
            bail!(
                "{tool} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let data = self.data_dir();
        if let Err(e) = self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-m".as_ref(),
                "immediate".as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ],
        ) {
            eprintln!("warning: could not stop the test cluster: {e:#}");
        }
    }
}

fn find_pg_bin() -> Option<PathBuf> {
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("pg_ctl").exists()).then_some((version, bin))
        })
        .collect();
    candidates.sort();
    if let Some((_, bin)) = candidates.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("probing a free port")?;
    Ok(l.local_addr().context("probing a free port")?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_the_database_swapped() {
        assert_eq!(
            with_dbname("postgres://postgres@127.0.0.1:5432/test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_dbname("postgres://u:p@h/test?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(with_dbname("postgres://h:5", "x"), "postgres://h:5/x");
        assert_eq!(
            with_dbname("host=/tmp user=postgres", "x"),
            "host=/tmp user=postgres dbname=x"
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@h:5/db"),
            "postgres://u:***@h:5/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("host=h password=secret"), "host=h password=***");
    }
}
