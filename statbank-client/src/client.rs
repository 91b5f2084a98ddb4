//! The HTTP client: politeness (minimum interval between request starts,
//! bounded concurrency), retries with exponential backoff and jitter, typed
//! errors, and streamed BULK bodies.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use futures_util::StreamExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use sync_state::TableId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{Catalog, DataRequest, Endpoint, Error, Lang, TableInfo, TablesRequest};

/// The live API.
pub const DEFAULT_BASE_URL: &str = "https://api.statbank.dk/v1";

/// Client settings. Build with [`ClientBuilder`]; every default is documented
/// on its setter.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    base_url: String,
    lang: Lang,
    connect_timeout: Duration,
    request_timeout: Duration,
    read_timeout: Duration,
    min_interval: Duration,
    max_concurrent: usize,
    max_retries: usize,
    min_backoff: Duration,
    max_backoff: Duration,
    max_retry_after: Duration,
    max_response_bytes: Option<u64>,
    bulk_timeout: BulkTimeout,
    user_agent: String,
}

/// How long a whole BULK body may stream, head to last byte. Bounds a
/// server that drips bytes just fast enough never to hit the read timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BulkTimeout {
    /// From the rows the request is expected to return
    /// ([`DataRequest::expected_rows`]): [`BulkTimeout::DERIVED_BASE`] plus
    /// one second per [`BulkTimeout::DERIVED_ROWS_PER_SEC`] rows (10 minutes
    /// for a small table, 93 minutes for the largest request the sync
    /// makes, 50 million rows). The default.
    #[default]
    Derived,
    /// At most this long, whatever the request.
    Fixed(Duration),
    /// No bound (only the read timeout applies).
    Unbounded,
}

impl BulkTimeout {
    /// The fixed part of a derived timeout.
    pub const DERIVED_BASE: Duration = Duration::from_secs(600);
    /// The slowest rate a derived timeout allows, in rows per second
    /// (about 300 KB/s of BULK text).
    pub const DERIVED_ROWS_PER_SEC: u64 = 10_000;

    /// The bound for a request expected to return `rows` rows.
    pub fn for_rows(self, rows: u64) -> Option<Duration> {
        match self {
            BulkTimeout::Derived => {
                Some(Self::DERIVED_BASE + Duration::from_secs(rows / Self::DERIVED_ROWS_PER_SEC))
            }
            BulkTimeout::Fixed(d) => Some(d),
            BulkTimeout::Unbounded => None,
        }
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            base_url: DEFAULT_BASE_URL.into(),
            lang: Lang::Da,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
            read_timeout: Duration::from_secs(120),
            min_interval: Duration::from_millis(250),
            max_concurrent: 2,
            max_retries: 4,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(300),
            max_response_bytes: None,
            bulk_timeout: BulkTimeout::Derived,
            user_agent: concat!("statbank-sync/", env!("CARGO_PKG_VERSION")).into(),
        }
    }
}

/// Builds a [`StatbankClient`].
///
/// ```
/// use std::time::Duration;
/// let client = statbank_client::ClientBuilder::new()
///     .base_url("http://127.0.0.1:8080/v1")
///     .min_interval(Duration::ZERO)
///     .max_retries(2)
///     .build()
///     .unwrap();
/// assert_eq!(client.config().base_url(), "http://127.0.0.1:8080/v1");
/// ```
#[derive(Debug, Clone, Default)]
pub struct ClientBuilder {
    cfg: ClientConfig,
}

impl ClientBuilder {
    /// Defaults: the live API, `da`, and the values on each setter.
    pub fn new() -> ClientBuilder {
        ClientBuilder::default()
    }
    /// Base URL up to and including `/v1` (default `https://api.statbank.dk/v1`).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.cfg.base_url = url.into().trim_end_matches('/').to_string();
        self
    }
    /// Language (default `da`).
    pub fn lang(mut self, lang: Lang) -> Self {
        self.cfg.lang = lang;
        self
    }
    /// TCP/TLS connect timeout (default 10 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.cfg.connect_timeout = d;
        self
    }
    /// Whole-request timeout for JSON endpoints (default 120 s). BULK bodies
    /// have no total timeout (they can be gigabytes), only the read timeout.
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.cfg.request_timeout = d;
        self
    }
    /// Longest wait for the response head or the next body bytes (default 120 s).
    pub fn read_timeout(mut self, d: Duration) -> Self {
        self.cfg.read_timeout = d;
        self
    }
    /// Minimum interval between the starts of two requests (default 250 ms;
    /// `Duration::ZERO` disables it).
    pub fn min_interval(mut self, d: Duration) -> Self {
        self.cfg.min_interval = d;
        self
    }
    /// Most requests in flight at once, BULK bodies included (default 2).
    pub fn max_concurrent(mut self, n: usize) -> Self {
        self.cfg.max_concurrent = n.max(1);
        self
    }
    /// Retries after the first attempt for retryable errors (default 4).
    pub fn max_retries(mut self, n: usize) -> Self {
        self.cfg.max_retries = n;
        self
    }
    /// First backoff delay (default 1 s); doubles with jitter per retry.
    pub fn min_backoff(mut self, d: Duration) -> Self {
        self.cfg.min_backoff = d;
        self
    }
    /// Largest backoff delay (default 60 s).
    pub fn max_backoff(mut self, d: Duration) -> Self {
        self.cfg.max_backoff = d;
        self
    }
    /// Cap on an honoured `Retry-After` (default 300 s).
    pub fn max_retry_after(mut self, d: Duration) -> Self {
        self.cfg.max_retry_after = d;
        self
    }
    /// Longest a whole BULK body may take, head to last byte (default
    /// [`BulkTimeout::Derived`] from the request's expected rows: a large
    /// table's body can legitimately stream for many minutes, a dripping
    /// server must not hold a scheduled run forever).
    pub fn bulk_timeout(mut self, t: BulkTimeout) -> Self {
        self.cfg.bulk_timeout = t;
        self
    }
    /// Largest response body accepted, in bytes (default unlimited).
    pub fn max_response_bytes(mut self, n: Option<u64>) -> Self {
        self.cfg.max_response_bytes = n;
        self
    }
    /// `User-Agent` header (default `statbank-sync/<version>`).
    pub fn user_agent(mut self, ua: impl Into<String>) -> Self {
        self.cfg.user_agent = ua.into();
        self
    }
    /// Builds the client (rustls, certificate verification on).
    pub fn build(self) -> Result<StatbankClient, Error> {
        StatbankClient::with_config(self.cfg)
    }
}

impl ClientConfig {
    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }
    /// The language.
    pub fn lang(&self) -> Lang {
        self.lang
    }
    /// The largest response body accepted.
    pub fn max_response_bytes(&self) -> Option<u64> {
        self.max_response_bytes
    }
}

/// Counters of what a client did, for metrics and manifests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// HTTP requests sent (retries included).
    pub requests: u64,
    /// Retries made.
    pub retries: u64,
    /// Response body bytes received.
    pub bytes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    retries: AtomicU64,
    bytes: AtomicU64,
}

/// Largest JSON answer (catalog, tableinfo) accepted, whatever the
/// configuration: the real catalog is about 1 MB, the largest tableinfo a few.
pub const MAX_JSON_BYTES: u64 = 64 << 20;

/// A typed, polite client for the StatBank API. Cheap to clone; clones share
/// the rate limit, the concurrency bound and the counters.
#[derive(Clone)]
pub struct StatbankClient {
    http: reqwest::Client,
    cfg: Arc<ClientConfig>,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    slots: Arc<Semaphore>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for StatbankClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatbankClient")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl StatbankClient {
    /// A client with default settings for `base_url`.
    pub fn new(base_url: impl Into<String>) -> Result<StatbankClient, Error> {
        ClientBuilder::new().base_url(base_url).build()
    }

    /// A builder with the defaults.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    fn with_config(cfg: ClientConfig) -> Result<StatbankClient, Error> {
        if !(cfg.base_url.starts_with("http://") || cfg.base_url.starts_with("https://")) {
            return Err(Error::Config(format!(
                "base url {:?} must start with http:// or https://",
                cfg.base_url
            )));
        }
        let http = reqwest::Client::builder()
            .redirect(same_origin_redirects())
            .connect_timeout(cfg.connect_timeout)
            .read_timeout(cfg.read_timeout)
            .user_agent(cfg.user_agent.clone())
            .https_only(cfg.base_url.starts_with("https://"))
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        let limiter = if cfg.min_interval.is_zero() {
            None
        } else {
            Quota::with_period(cfg.min_interval)
                .map(|q| Arc::new(RateLimiter::direct(q.allow_burst(NonZeroU32::MIN))))
        };
        Ok(StatbankClient {
            http,
            slots: Arc::new(Semaphore::new(cfg.max_concurrent.max(1))),
            cfg: Arc::new(cfg),
            limiter,
            counters: Arc::default(),
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// What the client did so far.
    pub fn stats(&self) -> ClientStats {
        ClientStats {
            requests: self.counters.requests.load(Ordering::Relaxed),
            retries: self.counters.retries.load(Ordering::Relaxed),
            bytes: self.counters.bytes.load(Ordering::Relaxed),
        }
    }

    fn url(&self, endpoint: Endpoint) -> String {
        format!("{}/{}", self.cfg.base_url, endpoint.path())
    }

    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.cfg.min_backoff)
            .with_max_delay(self.cfg.max_backoff)
            .with_max_times(self.cfg.max_retries)
            .with_jitter()
    }

    /// Runs `attempt` with the retry policy: retryable errors are retried with
    /// exponential backoff and jitter, honouring `Retry-After` (capped).
    pub async fn with_retries<T, F, Fut>(&self, what: &str, attempt: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        let cap = self.cfg.max_retry_after;
        attempt
            .retry(self.backoff())
            .when(Error::is_retryable)
            .adjust(move |e: &Error, d| match e.retry_after() {
                Some(ra) => Some(ra.min(cap)),
                None => d,
            })
            .notify(|e: &Error, d: Duration| {
                self.counters.retries.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(what, error = %crate::error_chain(e), retry_in = ?d, "retrying");
            })
            .await
    }

    async fn start(&self) -> OwnedSemaphorePermit {
        // The semaphore is never closed, so acquiring cannot fail; fall back
        // to a fresh permit rather than panic.
        let permit = match self.slots.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => {
                let s = Arc::new(Semaphore::new(1));
                #[allow(clippy::expect_used)]
                s.acquire_owned().await.expect("fresh semaphore")
            }
        };
        if let Some(l) = &self.limiter {
            l.until_ready().await;
        }
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        permit
    }

    /// One attempt: send and check the status; the body is not read.
    async fn send(
        &self,
        endpoint: Endpoint,
        table: Option<&str>,
        req: reqwest::RequestBuilder,
    ) -> Result<(reqwest::Response, OwnedSemaphorePermit), Error> {
        let permit = self.start().await;
        let table_s = table.map(str::to_string);
        let resp = req
            .send()
            .await
            .map_err(|e| transport(endpoint, &table_s, e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok((resp, permit));
        }
        let retry_after = parse_retry_after(resp.headers());
        let body = read_limited(resp, 4096).await;
        Err(error_from_body(
            endpoint,
            table_s,
            status,
            retry_after,
            &body,
        ))
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        table: Option<&str>,
        make: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<(T, Bytes), Error> {
        self.get_decoded(endpoint, table, make, |b| serde_json::from_slice(b))
            .await
    }

    /// One JSON answer (with retries), decoded by `decode`.
    async fn get_decoded<T>(
        &self,
        endpoint: Endpoint,
        table: Option<&str>,
        make: impl Fn() -> reqwest::RequestBuilder,
        decode: impl Fn(&[u8]) -> Result<T, serde_json::Error>,
    ) -> Result<(T, Bytes), Error> {
        self.with_retries(endpoint.path(), || async {
            let (resp, _permit) = self
                .send(endpoint, table, make().timeout(self.cfg.request_timeout))
                .await?;
            let table_s = table.map(str::to_string);
            let bytes = self.read_body(endpoint, &table_s, resp).await?;
            let value = decode(&bytes).map_err(|source| Error::Decode {
                endpoint,
                table: table_s,
                source,
            })?;
            Ok((value, bytes))
        })
        .await
    }

    async fn read_body(
        &self,
        endpoint: Endpoint,
        table: &Option<String>,
        resp: reqwest::Response,
    ) -> Result<Bytes, Error> {
        let mut stream = resp.bytes_stream();
        let mut buf = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| transport(endpoint, table, e))?;
            self.counters
                .bytes
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            buf.extend_from_slice(&chunk);
            // JSON answers are held whole: always bounded, by the configured
            // limit or by MAX_JSON_BYTES.
            {
                let limit = self
                    .cfg
                    .max_response_bytes
                    .unwrap_or(MAX_JSON_BYTES)
                    .min(MAX_JSON_BYTES);
                if buf.len() as u64 > limit {
                    return Err(Error::TooLarge {
                        endpoint,
                        table: table.clone(),
                        limit,
                    });
                }
            }
        }
        Ok(Bytes::from(buf))
    }

    /// `/v1/tables`: the catalog. A body that is not a JSON array is an
    /// error; an entry that cannot be used is set aside in
    /// [`Catalog::rejected`] and the others are kept.
    pub async fn tables(&self, req: &TablesRequest) -> Result<Catalog, Error> {
        Ok(self.tables_raw(req).await?.0)
    }

    /// `/v1/tables` with the raw JSON body as received.
    pub async fn tables_raw(&self, req: &TablesRequest) -> Result<(Catalog, Bytes), Error> {
        let mut body = serde_json::json!({
            "lang": req.lang.unwrap_or(self.cfg.lang).as_str(),
            "format": "JSON",
        });
        if !req.subjects.is_empty() {
            body["subjects"] = req.subjects.clone().into();
        }
        if let Some(d) = req.past_days {
            body["pastDays"] = d.into();
        }
        if req.include_inactive {
            body["includeInactive"] = true.into();
        }
        let url = self.url(Endpoint::Tables);
        self.get_decoded(
            Endpoint::Tables,
            None,
            || self.http.post(&url).json(&body),
            Catalog::from_json,
        )
        .await
    }

    /// `/v1/subjects` in `lang`, the whole tree with the tables filed
    /// under each subject (`recursive=true&includeTables=true`), decoded,
    /// plus the raw JSON as received (for the metadata cache).
    pub async fn subjects_in(
        &self,
        lang: Lang,
    ) -> Result<(Vec<sync_state::subjects::Subject>, Bytes), Error> {
        let url = self.url(Endpoint::Subjects);
        let lang = lang.as_str();
        self.get_json(Endpoint::Subjects, None, || {
            self.http.get(&url).query(&[
                ("lang", lang),
                ("recursive", "true"),
                ("includeTables", "true"),
                ("format", "JSON"),
            ])
        })
        .await
    }

    /// `/v1/tableinfo` of one table, decoded, plus the raw JSON as received
    /// (for the metadata cache).
    pub async fn table_info(&self, table: &TableId) -> Result<(TableInfo, Bytes), Error> {
        self.table_info_in(table, self.cfg.lang).await
    }

    /// `/v1/tableinfo` of one table in `lang` (whatever the client's own
    /// language), as [`Self::table_info`].
    pub async fn table_info_in(
        &self,
        table: &TableId,
        lang: Lang,
    ) -> Result<(TableInfo, Bytes), Error> {
        let url = self.url(Endpoint::TableInfo);
        let lang = lang.as_str();
        let (info, raw): (TableInfo, Bytes) = self
            .get_json(Endpoint::TableInfo, Some(table.as_str()), || {
                self.http.get(&url).query(&[
                    ("id", table.as_str()),
                    ("format", "JSON"),
                    ("lang", lang),
                ])
            })
            .await?;
        if !info.id.eq_ignore_ascii_case(table.as_str()) {
            return Err(Error::Api {
                endpoint: Endpoint::TableInfo,
                table: Some(table.to_string()),
                status: 200,
                code: "UNEXPECTED-TABLE".into(),
                message: format!("asked for {table}, got tableinfo of {:?}", info.id),
            });
        }
        Ok((info, raw))
    }

    /// `/v1/data` in format BULK. The response head is checked (with
    /// retries); the body is returned as a stream, never held whole in
    /// memory. The request slot is held until the stream is dropped.
    pub async fn data_bulk(&self, req: &DataRequest) -> Result<BulkResponse, Error> {
        let url = self.url(Endpoint::Data);
        let body = req.body(self.cfg.lang);
        let table = req.table.as_str();
        let (resp, permit) = self
            .with_retries("data", || {
                self.send(
                    Endpoint::Data,
                    Some(table),
                    self.http.post(&url).json(&body),
                )
            })
            .await?;
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if content_type.contains("json") {
            // An error body with status 200 (should not happen, but be safe).
            let b = read_limited(resp, 4096).await;
            return Err(error_from_body(
                Endpoint::Data,
                Some(table.to_string()),
                StatusCode::OK,
                None,
                &b,
            ));
        }
        Ok(BulkResponse {
            table: req.table.clone(),
            lang: req.lang.unwrap_or(self.cfg.lang),
            stream: Box::pin(resp.bytes_stream()),
            counters: self.counters.clone(),
            received: 0,
            limit: self.cfg.max_response_bytes,
            deadline: self
                .cfg
                .bulk_timeout
                .for_rows(req.expected_rows)
                .map(|d| tokio::time::Instant::now() + d),
            _permit: permit,
        })
    }
}

/// Redirects are followed only within the base URL's origin (scheme, host
/// and port), at most 5: a redirect elsewhere could send the request, and
/// the next ones, to a host the user never named. A 307/308 repeats the
/// POST with its body, which is why it must stay on the same origin.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let same = attempt.previous().first().is_some_and(|first| {
            first.scheme() == attempt.url().scheme()
                && first.host_str() == attempt.url().host_str()
                && first.port_or_known_default() == attempt.url().port_or_known_default()
        });
        if attempt.previous().len() > 5 {
            attempt.error("more than 5 redirects")
        } else if same {
            attempt.follow()
        } else {
            let to = format!(
                "{}://{}",
                attempt.url().scheme(),
                attempt.url().host_str().unwrap_or("?")
            );
            attempt.error(format!("redirect to another origin ({to}) refused"))
        }
    })
}

/// A streamed BULK body. Read it with [`BulkResponse::next_chunk`] and feed
/// the chunks to a [`crate::BulkParser`].
pub struct BulkResponse {
    table: TableId,
    lang: Lang,
    stream: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<Bytes>> + Send>>,
    counters: Arc<Counters>,
    received: u64,
    limit: Option<u64>,
    deadline: Option<tokio::time::Instant>,
    _permit: OwnedSemaphorePermit,
}

impl BulkResponse {
    /// The table requested.
    pub fn table(&self) -> &TableId {
        &self.table
    }

    /// The language of the body (decides the decimal separator).
    pub fn lang(&self) -> Lang {
        self.lang
    }

    /// Body bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The next chunk of the body; `Ok(None)` at its end. A connection cut
    /// off mid-body is an error, not an early end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, Error> {
        let next = match self.deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Ok(n) => n,
                Err(_) => {
                    return Err(Error::Timeout {
                        endpoint: Endpoint::Data,
                        table: Some(self.table.to_string()),
                    })
                }
            },
            None => self.stream.next().await,
        };
        match next {
            None => Ok(None),
            Some(Err(e)) => Err(transport(Endpoint::Data, &Some(self.table.to_string()), e)),
            Some(Ok(b)) => {
                self.received += b.len() as u64;
                self.counters
                    .bytes
                    .fetch_add(b.len() as u64, Ordering::Relaxed);
                if let Some(limit) = self.limit {
                    if self.received > limit {
                        return Err(Error::TooLarge {
                            endpoint: Endpoint::Data,
                            table: Some(self.table.to_string()),
                            limit,
                        });
                    }
                }
                Ok(Some(b))
            }
        }
    }

    /// A parser set up for this body.
    pub fn parser(&self) -> crate::BulkParser {
        crate::BulkParser::new(self.table.as_str(), self.lang)
    }
}

fn transport(endpoint: Endpoint, table: &Option<String>, e: reqwest::Error) -> Error {
    if is_dns_failure(&e) {
        let host = e
            .url()
            .and_then(|u| u.host_str())
            .unwrap_or("?")
            .to_string();
        return Error::Unresolved {
            endpoint,
            host,
            source: e,
        };
    }
    if e.is_timeout() {
        Error::Timeout {
            endpoint,
            table: table.clone(),
        }
    } else {
        Error::Transport {
            endpoint,
            table: table.clone(),
            source: e,
        }
    }
}

/// A connect error whose cause is a name lookup that failed for good.
fn is_dns_failure(e: &reqwest::Error) -> bool {
    if !e.is_connect() {
        return false;
    }
    let mut chain = Vec::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = source {
        chain.push(s.to_string());
        source = s.source();
    }
    is_permanent_dns_failure(&chain)
}

/// Whether an error chain's texts say the name lookup failed, and not
/// only for now: a resolver's "temporary failure" (`EAI_AGAIN`, a DNS
/// server that did not answer) is a transport error and retried.
fn is_permanent_dns_failure(chain: &[String]) -> bool {
    let dns = chain
        .iter()
        .any(|t| t.contains("dns error") || t.contains("failed to lookup address"));
    let temporary = chain
        .iter()
        .any(|t| t.to_ascii_lowercase().contains("temporary failure"));
    dns && !temporary
}

async fn read_limited(resp: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut stream = resp.bytes_stream();
    let mut buf = Vec::new();
    while let Some(Ok(chunk)) = stream.next().await {
        buf.extend_from_slice(&chunk);
        if buf.len() >= limit {
            buf.truncate(limit);
            break;
        }
    }
    buf
}

fn parse_retry_after(h: &HeaderMap) -> Option<Duration> {
    h.get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiErrorBody {
    error_type_code: String,
    #[serde(default)]
    message: String,
}

/// Maps an error response to [`Error::Api`] when the body is the API's error
/// JSON, else to [`Error::Status`].
pub(crate) fn error_from_body(
    endpoint: Endpoint,
    table: Option<String>,
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Error {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    match serde_json::from_slice::<ApiErrorBody>(body) {
        Ok(api) if !(status.as_u16() == 429 || status.is_server_error()) => Error::Api {
            endpoint,
            table,
            status: status.as_u16(),
            code: api.error_type_code,
            message: api.message,
        },
        _ => Error::Status {
            endpoint,
            table,
            status: status.as_u16(),
            retry_after,
            body: (!body.is_empty())
                .then(|| String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_real_error_body_maps_to_its_typed_error() {
        let path = format!(
            "{}/testdata/errors_real_bodies.txt",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).expect("fixture");
        let mut n = 0;
        for line in text.lines().filter(|l| l.starts_with('{')) {
            let expected: serde_json::Value = serde_json::from_str(line).expect("json");
            let err = error_from_body(
                Endpoint::Data,
                Some("FOLK1A".into()),
                StatusCode::BAD_REQUEST,
                None,
                line.as_bytes(),
            );
            match &err {
                Error::Api {
                    code,
                    message,
                    status,
                    ..
                } => {
                    assert_eq!(code, expected["errorTypeCode"].as_str().expect("code"));
                    assert_eq!(message, expected["message"].as_str().expect("message"));
                    assert_eq!(*status, 400);
                }
                other => panic!("{other:?}"),
            }
            assert!(!err.is_retryable());
            assert!(err.to_string().contains("FOLK1A"));
            n += 1;
        }
        assert_eq!(n, 6);
    }

    #[test]
    fn server_errors_and_429_are_retryable() {
        let e = error_from_body(
            Endpoint::Data,
            None,
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            b"oops",
        );
        assert!(e.is_retryable());
        let e = error_from_body(
            Endpoint::Data,
            None,
            StatusCode::TOO_MANY_REQUESTS,
            Some(Duration::from_secs(3)),
            b"",
        );
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        let e = error_from_body(Endpoint::Data, None, StatusCode::NOT_FOUND, None, b"<html>");
        assert!(!e.is_retryable());
    }
}

#[cfg(test)]
mod offline_tests {
    use super::*;

    /// A host that cannot resolve (`.invalid` never does) fails at once,
    /// naming the host and the way to the emulator, with no retries.
    #[tokio::test]
    async fn an_unresolvable_host_fails_fast_with_a_hint() {
        let client = StatbankClient::builder()
            .base_url("http://statbank.invalid/v1")
            .max_retries(4)
            .min_interval(Duration::ZERO)
            .build()
            .expect("client");
        let started = std::time::Instant::now();
        let err = client
            .tables(&TablesRequest::default())
            .await
            .expect_err("cannot resolve");
        assert!(matches!(err, Error::Unresolved { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("statbank.invalid"), "{text}");
        assert!(text.contains("--base-url"), "{text}");
        assert_eq!(client.stats().retries, 0);
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    /// A name that does not exist fails at once; a resolver that did not
    /// answer this time is retried like any transport error.
    #[test]
    fn only_permanent_lookup_failures_fail_fast() {
        let chain = |texts: &[&str]| texts.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        assert!(is_permanent_dns_failure(&chain(&[
            "client error (Connect)",
            "dns error",
            "failed to lookup address information: Name or service not known",
        ])));
        assert!(!is_permanent_dns_failure(&chain(&[
            "client error (Connect)",
            "dns error",
            "failed to lookup address information: Temporary failure in name resolution",
        ])));
        assert!(!is_permanent_dns_failure(&chain(&[
            "client error (Connect)",
            "tcp connect error",
            "Connection refused (os error 111)",
        ])));
    }
}
