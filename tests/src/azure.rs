//! A real Azure Blob Storage server for the tests (Azurite, Microsoft's
//! emulator), found or started like the S3 server:
//!
//! 1. `STATBANK_TEST_AZURITE_ENDPOINT` (the blob service, e.g.
//!    `http://127.0.0.1:10000`): a server someone started. `.ci/run`
//!    starts Azurite this way.
//! 2. Otherwise `azurite-blob` on `PATH` (`npm install -g azurite`), started
//!    here on a free loopback port for this test process and stopped when
//!    it exits.
//! 3. Otherwise: under `CI` an error (the test fails, never skips); on a
//!    developer machine the Azure tests print `SKIP` and pass.
//!
//! Azurite's well-known development account is used, and the container
//! (`STATBANK_TEST_AZURE_CONTAINER`, default `statbank-test`) is created
//! with a signed request. Every test works under its own prefix.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use hmac::{KeyInit as _, Mac as _};
use sync_state::DataDir;

/// Azurite's development account (public, documented by Microsoft).
const ACCOUNT: &str = "devstoreaccount1";
const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Where the test Azure server is.
#[derive(Debug, Clone)]
pub struct Azure {
    /// The blob service, `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The container every test writes under.
    pub container: String,
    /// What provided it (`STATBANK_TEST_AZURITE_ENDPOINT`, `azurite`).
    pub source: &'static str,
}

impl Azure {
    /// Settings for [`DataDir::open_with`] (in-process code, no environment).
    pub fn options(&self) -> Vec<(String, String)> {
        [
            (
                "azure_storage_endpoint",
                format!("{}/{ACCOUNT}", self.endpoint),
            ),
            ("azure_storage_account_name", ACCOUNT.to_string()),
            ("azure_storage_account_key", ACCOUNT_KEY.to_string()),
            ("azure_allow_http", "true".to_string()),
            ("max_retries", "3".to_string()),
            ("retry_timeout_secs", "10".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// A fresh, unique `az://container/<name>-<unique>` location.
    pub fn url(&self, name: &str) -> String {
        crate::server::unique_url("az", &self.container, name)
    }

    /// A data folder at a fresh location.
    pub fn data_dir(&self, name: &str) -> Result<DataDir> {
        let url = self.url(name);
        DataDir::open_with(&url, &self.options()).with_context(|| format!("opening {url}"))
    }
}

/// The test Azure server: `Ok(None)` only when none can be had and `CI` is
/// not set (the caller prints `SKIP` and returns).
pub fn test_azure() -> Result<Option<&'static Azure>> {
    static SERVER: OnceLock<Result<Option<Azure>, String>> = OnceLock::new();
    let got = SERVER.get_or_init(|| {
        std::thread::spawn(|| find_or_start().map_err(|e| format!("{e:#}")))
            .join()
            .unwrap_or_else(|_| Err("the Azurite start-up thread panicked".into()))
    });
    match got {
        Ok(Some(a)) => Ok(Some(a)),
        Ok(None) if std::env::var_os("CI").is_some() => {
            bail!("CI is set but no Azure server is available: set STATBANK_TEST_AZURITE_ENDPOINT or install azurite-blob (npm install -g azurite)")
        }
        Ok(None) => {
            eprintln!("SKIP: no Azure server (set STATBANK_TEST_AZURITE_ENDPOINT, or install azurite-blob)");
            Ok(None)
        }
        Err(e) => Err(anyhow!("{e}")),
    }
}

fn find_or_start() -> Result<Option<Azure>> {
    let container =
        std::env::var("STATBANK_TEST_AZURE_CONTAINER").unwrap_or_else(|_| "statbank-test".into());
    let (endpoint, source) = match std::env::var("STATBANK_TEST_AZURITE_ENDPOINT") {
        Ok(e) => (
            e.trim_end_matches('/').to_string(),
            "STATBANK_TEST_AZURITE_ENDPOINT",
        ),
        Err(_) => match crate::server::which("azurite-blob") {
            Some(tool) => (start(&tool)?, "azurite"),
            None => return Ok(None),
        },
    };
    create_container(&endpoint, &container, Duration::from_secs(60))
        .with_context(|| format!("creating container {container} at {endpoint}"))?;
    eprintln!("tests use the Azure server at {endpoint} ({source}, container {container})");
    Ok(Some(Azure {
        endpoint,
        container,
        source,
    }))
}

/// Starts `azurite-blob` for this test process; returns its endpoint.
fn start(tool: &std::path::Path) -> Result<String> {
    let (port, dir) = crate::server::port_and_dir("azurite")?;
    let cmd = format!(
        "'{}' --blobHost 127.0.0.1 --blobPort {port} --location '{}' --skipApiVersionCheck --disableTelemetry --silent",
        tool.display(),
        dir.display()
    );
    crate::server::spawn_watched(&cmd, &dir, &[])?;
    Ok(format!("http://127.0.0.1:{port}"))
}

/// Creates the container (Shared Key signed `PUT ?restype=container`),
/// waiting for the server to answer; an existing container is fine.
fn create_container(endpoint: &str, container: &str, timeout: Duration) -> Result<()> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let deadline = Instant::now() + timeout;
    loop {
        match put_container(&client, endpoint, container) {
            Ok(201 | 409) => return Ok(()),
            Ok(status) if Instant::now() > deadline => bail!("answered {status}"),
            Err(e) if Instant::now() > deadline => return Err(e),
            _ => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}

fn put_container(
    client: &reqwest::blocking::Client,
    endpoint: &str,
    container: &str,
) -> Result<u16> {
    let date = chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let version = "2021-08-06";
    // Verb, eleven empty standard headers, the x-ms headers, the resource
    // (the account twice: path-style emulator URLs).
    let to_sign = format!(
        "PUT\n{}x-ms-date:{date}\nx-ms-version:{version}\n/{ACCOUNT}/{ACCOUNT}/{container}\nrestype:container",
        "\n".repeat(11)
    );
    let key = base64::engine::general_purpose::STANDARD.decode(ACCOUNT_KEY)?;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).map_err(|e| anyhow!("hmac key: {e}"))?;
    mac.update(to_sign.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let r = client
        .put(format!(
            "{endpoint}/{ACCOUNT}/{container}?restype=container"
        ))
        .header("x-ms-date", date)
        .header("x-ms-version", version)
        .header("Authorization", format!("SharedKey {ACCOUNT}:{signature}"))
        .header("Content-Length", "0")
        .send()?;
    Ok(r.status().as_u16())
}
