//! HTTP routing, request parsing, fault injection and response streaming.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::serve::ListenerExt;
use axum::Router;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};

use super::bulk::{self, ApiError, BulkGen, Presentation};
use super::time;
use super::world::{EmuTable, World};
use super::{Endpoint, FaultKind, Inner, RecordedRequest, Shared};

const JSON_TYPE: &str = "text/json; charset=utf-8";
const CSV_TYPE: &str = "text/csv; charset=utf-8";
const BOM: &[u8] = b"\xEF\xBB\xBF";
const MAX_REQUEST_BODY: usize = 1 << 20;
/// Cell limit of the non-streaming formats.
const CELL_LIMIT: u128 = 1_000_000;

/// Runs the server until the shared shutdown flag is raised.
pub(crate) async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let mut rx = shared.shutdown.subscribe();
    let app = Router::new().fallback(handle).with_state(shared);
    let listener = listener.tap_io(|tcp| {
        // Small JSON answers should not wait for Nagle.
        let _ = tcp.set_nodelay(true);
    });
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = rx.wait_for(|stop| *stop).await;
        })
        .await;
}

/// Where a request goes.
struct Route {
    endpoint: Option<Endpoint>,
    /// Table id from the path (`/v1/tableinfo/FOLK1A`, `/v1/data/FOLK1A/BULK`).
    path_table: Option<String>,
    /// Format from the path (`/v1/data/FOLK1A/BULK`).
    path_format: Option<String>,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn route(path: &str) -> Route {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let lower: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
    let none = Route {
        endpoint: None,
        path_table: None,
        path_format: None,
    };
    if lower.first().map(String::as_str) != Some("v1") {
        return none;
    }
    let arg = |i: usize| segs.get(i).map(|s| percent_decode(s));
    match (lower.get(1).map(String::as_str), segs.len()) {
        (Some("tables"), 2) => Route {
            endpoint: Some(Endpoint::Tables),
            ..none
        },
        (Some("subjects"), 2) => Route {
            endpoint: Some(Endpoint::Subjects),
            ..none
        },
        (Some("tableinfo"), 2 | 3) => Route {
            endpoint: Some(Endpoint::TableInfo),
            path_table: arg(2),
            path_format: None,
        },
        (Some("data"), 2..=4) => Route {
            endpoint: Some(Endpoint::Data),
            path_table: arg(2),
            path_format: arg(3),
        },
        _ => none,
    }
}

/// Request parameters merged from the query string and a JSON body.
struct Params {
    map: Map<String, Value>,
    /// Data variables as (code, value expressions), in request order.
    variables: Vec<(String, Vec<String>)>,
}

impl Params {
    fn get(&self, key: &str) -> Option<&Value> {
        self.map
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    }

    fn get_str(&self, key: &str) -> Option<String> {
        self.get(key).and_then(value_string)
    }
}

fn value_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Query keys of `/v1/data` GET that are options, not variables.
const DATA_OPTIONS: &[&str] = &[
    "table",
    "format",
    "lang",
    "valuepresentation",
    "timeorder",
    "delimiter",
    "allowvariablesinhead",
    "allowcodeoverridetimelimits",
];

fn parse_params(
    endpoint: Endpoint,
    query: Vec<(String, String)>,
    body: &[u8],
    is_post: bool,
) -> Result<Params, ApiError> {
    let mut map = Map::new();
    let mut variables = Vec::new();
    for (k, v) in query {
        let lower = k.to_ascii_lowercase();
        if endpoint == Endpoint::Data && !DATA_OPTIONS.contains(&lower.as_str()) {
            let values = v
                .split(',')
                .map(str::to_string)
                .filter(|s| !s.is_empty())
                .collect();
            variables.push((k, values));
        } else {
            map.insert(k, Value::String(v));
        }
    }
    let trimmed = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map(|i| &body[i..])
        .unwrap_or(&[]);
    if is_post && !trimmed.is_empty() {
        let trimmed = trimmed.strip_prefix(BOM).unwrap_or(trimmed);
        let parsed: Value = serde_json::from_slice(trimmed).map_err(|e| {
            ApiError::bad_request(
                "REQUEST-INVALID",
                format!("Forespørgslen kunne ikke læses som JSON: {e}"),
            )
        })?;
        let Value::Object(obj) = parsed else {
            return Err(ApiError::bad_request(
                "REQUEST-INVALID",
                "Forespørgslen skal være et JSON-objekt",
            ));
        };
        for (k, v) in obj {
            if endpoint == Endpoint::Data && k.eq_ignore_ascii_case("variables") {
                variables = parse_variables(&v)?;
            } else {
                map.insert(k, v);
            }
        }
    }
    Ok(Params { map, variables })
}

fn parse_variables(v: &Value) -> Result<Vec<(String, Vec<String>)>, ApiError> {
    let invalid = || {
        ApiError::bad_request(
            "REQUEST-INVALID",
            "'variables' skal være en liste af {\"code\",\"values\"}",
        )
    };
    let Value::Array(items) = v else {
        return Err(invalid());
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Object(obj) = item else {
            return Err(invalid());
        };
        let field = |name: &str| {
            obj.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        };
        let code = field("code").and_then(value_string).ok_or_else(invalid)?;
        let values = match field("values") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(vals)) => vals.iter().filter_map(value_string).collect(),
            Some(other) => value_string(other).into_iter().collect(),
        };
        out.push((code, values));
    }
    Ok(out)
}

fn check_lang(p: &Params) -> Result<bool, ApiError> {
    match p.get_str("lang") {
        None => Ok(false),
        Some(l) if l.eq_ignore_ascii_case("da") || l.is_empty() => Ok(false),
        Some(l) if l.eq_ignore_ascii_case("en") => Ok(true),
        Some(l) => Err(ApiError::bad_request(
            "REQUEST-LANGUAGE",
            format!("Sproget '{l}' understøttes ikke. Brug 'da' eller 'en'."),
        )),
    }
}

fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true") || s == "1",
        Some(Value::Number(n)) => n.as_i64() == Some(1),
        _ => false,
    }
}

/// The successful answer of an endpoint.
enum Success {
    Json(String),
    Bulk {
        spec: Box<bulk::BulkSpec>,
        csv_bom: bool,
    },
}

#[derive(Serialize)]
struct CatalogOut<'a> {
    id: &'a str,
    text: &'a str,
    unit: &'a str,
    updated: &'a str,
    #[serde(rename = "firstPeriod")]
    first_period: Option<&'a str>,
    #[serde(rename = "latestPeriod")]
    latest_period: Option<&'a str>,
    active: bool,
    variables: Vec<String>,
}

fn tables(world: &World, p: &Params) -> Result<Success, ApiError> {
    let english = check_lang(p)?;
    let include_inactive = truthy(p.get("includeInactive"));
    let past_days = p
        .get_str("pastDays")
        .and_then(|s| s.trim().parse::<i64>().ok());
    let cutoff = past_days.map(|d| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        now - d.saturating_mul(86_400)
    });
    // `subjects` is accepted but not modelled: the emulator has no subject tree.
    let out: Vec<CatalogOut<'_>> = world
        .tables
        .iter()
        .filter(|(_, t)| t.active || include_inactive)
        .filter(|(_, t)| match (cutoff, time::parse_updated(&t.updated)) {
            (Some(c), Some(u)) => u >= c,
            _ => true,
        })
        .map(|(key, t)| {
            let en = english.then_some(&t.english);
            let mut variables: Vec<String> = t
                .variables
                .iter()
                .map(|v| {
                    en.and_then(|e| e.variables.get(&v.id))
                        .unwrap_or(&v.text)
                        .to_lowercase()
                })
                .collect();
            variables.push(if english { "time" } else { "tid" }.to_string());
            CatalogOut {
                id: key,
                text: en.and_then(|e| e.text.as_deref()).unwrap_or(&t.text),
                unit: en.and_then(|e| e.unit.as_deref()).unwrap_or(&t.unit),
                updated: &t.updated,
                first_period: t.first_period(),
                latest_period: t.latest_period(),
                active: t.active,
                variables,
            }
        })
        .collect();
    serde_json::to_string(&out)
        .map(Success::Json)
        .map_err(|e| ApiError::bad_request("REQUEST-INVALID", e.to_string()))
}

/// `/v1/subjects`: the top level, or the whole tree with `recursive`;
/// with `includeTables` each subject's tables in the catalog's shape.
fn subjects(world: &World, p: &Params) -> Result<Success, ApiError> {
    let english = check_lang(p)?;
    let recursive = truthy(p.get("recursive"));
    let include_tables = truthy(p.get("includeTables"));
    let out: Vec<Value> = world
        .subjects
        .iter()
        .map(|s| subject_json(world, s, english, recursive, include_tables))
        .collect();
    serde_json::to_string(&out)
        .map(Success::Json)
        .map_err(|e| ApiError::bad_request("REQUEST-INVALID", e.to_string()))
}

fn subject_json(
    world: &World,
    s: &crate::emulator::EmuSubject,
    english: bool,
    recursive: bool,
    include_tables: bool,
) -> Value {
    let children: Vec<Value> = if recursive {
        s.subjects
            .iter()
            .map(|c| subject_json(world, c, english, recursive, include_tables))
            .collect()
    } else {
        Vec::new()
    };
    let description = match (&s.description_en, english) {
        (Some(en), true) => en,
        _ => &s.description,
    };
    let mut out = serde_json::json!({
        "id": s.id,
        "description": description,
        "active": s.active,
        "hasSubjects": !s.subjects.is_empty(),
        "subjects": children,
    });
    if include_tables {
        let tables: Vec<Value> = s
            .tables
            .iter()
            .filter_map(|id| world.tables.get(&id.to_uppercase()))
            .map(|t| {
                let en = english.then_some(&t.english);
                serde_json::json!({
                    "id": t.id,
                    "text": en.and_then(|e| e.text.as_deref()).unwrap_or(&t.text),
                    "unit": en.and_then(|e| e.unit.as_deref()).unwrap_or(&t.unit),
                    "updated": t.updated,
                    "firstPeriod": t.first_period(),
                    "latestPeriod": t.latest_period(),
                    "active": t.active,
                    "variables": t.variables.iter().map(|v| v.text.to_lowercase()).collect::<Vec<_>>(),
                })
            })
            .collect();
        out["tables"] = Value::Array(tables);
    }
    out
}

#[derive(Serialize)]
struct InfoOut<'a> {
    id: &'a str,
    text: &'a str,
    description: &'a str,
    unit: &'a str,
    #[serde(rename = "suppressedDataValue")]
    suppressed_data_value: &'a str,
    updated: &'a str,
    active: bool,
    contacts: &'a Value,
    documentation: &'a Value,
    footnote: &'a Value,
    variables: Vec<InfoVar<'a>>,
}

#[derive(Serialize)]
struct InfoVar<'a> {
    id: &'a str,
    text: &'a str,
    elimination: bool,
    time: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    map: Option<&'a str>,
    values: Vec<InfoValue<'a>>,
}

#[derive(Serialize)]
struct InfoValue<'a> {
    id: &'a str,
    text: std::borrow::Cow<'a, str>,
}

fn missing_table() -> ApiError {
    ApiError::bad_request("REQUEST-MISSING", "Der er ikke angivet nogen tabel")
}

fn table_not_found(id: &str) -> ApiError {
    ApiError::bad_request("EXTRACT-NOTFOUND", format!("Tabel findes ikke: {id}"))
}

fn tableinfo(world: &World, p: &Params, table: Option<&str>) -> Result<Success, ApiError> {
    let english = check_lang(p)?;
    let id = table.ok_or_else(missing_table)?;
    let key = id.to_uppercase();
    let t = world.tables.get(&key).ok_or_else(|| table_not_found(id))?;
    let en = english.then_some(&t.english);
    let mut variables: Vec<InfoVar<'_>> = t
        .variables
        .iter()
        .map(|v| InfoVar {
            id: &v.id,
            text: en
                .and_then(|e| e.variables.get(&v.id))
                .map_or(&v.text, |t| t),
            elimination: v.elimination,
            time: false,
            map: v.map.as_deref(),
            values: v
                .values
                .iter()
                .map(|x| InfoValue {
                    id: &x.id,
                    text: std::borrow::Cow::Borrowed(
                        en.and_then(|e| e.value(&v.id, &x.id)).unwrap_or(&x.text),
                    ),
                })
                .collect(),
        })
        .collect();
    variables.push(InfoVar {
        id: "Tid",
        text: if english { "time" } else { "tid" },
        elimination: false,
        time: true,
        map: None,
        values: t
            .time_values
            .iter()
            .map(|x| {
                let text = match (english && x.text == x.id, time::english_period_text(&x.id)) {
                    (true, Some(en)) => std::borrow::Cow::Owned(en),
                    _ => std::borrow::Cow::Borrowed(x.text.as_str()),
                };
                InfoValue { id: &x.id, text }
            })
            .collect(),
    });
    let out = InfoOut {
        id: &key,
        text: en.and_then(|e| e.text.as_deref()).unwrap_or(&t.text),
        description: en
            .and_then(|e| e.description.as_deref())
            .unwrap_or(&t.description),
        unit: en.and_then(|e| e.unit.as_deref()).unwrap_or(&t.unit),
        suppressed_data_value: &t.suppressed_data_value,
        updated: &t.updated,
        active: t.active,
        contacts: &t.contacts,
        documentation: &t.documentation,
        footnote: &t.footnote,
        variables,
    };
    serde_json::to_string(&out)
        .map(Success::Json)
        .map_err(|e| ApiError::bad_request("REQUEST-INVALID", e.to_string()))
}

/// `85210650` → `85.210.650` (Danish thousands separator).
fn danish_thousands(n: u128) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('.');
        }
        out.push(c);
    }
    out
}

fn data(
    table: Option<EmuTable>,
    p: &Params,
    requested_table: Option<&str>,
    format: Option<&str>,
    interleave: bool,
) -> Result<Success, ApiError> {
    let english = check_lang(p)?;
    let id = requested_table.ok_or_else(missing_table)?;
    let t = table.ok_or_else(|| table_not_found(id))?;
    let format = format.unwrap_or("PX").to_ascii_uppercase();
    let streaming = format == "BULK";
    if streaming && p.get("timeOrder").is_some_and(|v| !v.is_null()) {
        return Err(ApiError::bad_request(
            "EXTRACT-STREAMINGTIMESORT",
            "Der kan ikke vælges sortering af tid for streamede formater.",
        ));
    }
    let sel = bulk::select(&t, &p.variables)?;
    if !streaming {
        let cells = sel.cells();
        if cells > CELL_LIMIT {
            return Err(ApiError::bad_request(
                "REQUEST-LIMIT",
                format!(
                    "Forespørgslen på op mod {} celler er over begrænsningen på {} celler for denne filtype. Anvend BULK eller andet streaming format i stedet.",
                    danish_thousands(cells),
                    danish_thousands(CELL_LIMIT)
                ),
            ));
        }
        if format != "CSV" {
            return Err(ApiError::bad_request(
                "EMULATOR-UNSUPPORTED",
                format!("Emulatoren understøtter kun formaterne BULK og CSV, ikke {format}."),
            ));
        }
    }
    let codes = p
        .get_str("valuePresentation")
        .is_some_and(|v| v.eq_ignore_ascii_case("code"));
    let spec = bulk::build_spec(
        &t,
        &sel,
        &Presentation {
            codes,
            english,
            interleave,
        },
    );
    Ok(Success::Bulk {
        spec: Box::new(spec),
        csv_bom: !streaming,
    })
}

/// Picks the fault for a request: explicit faults first (in order added),
/// then random faults.
fn pick_fault(
    inner: &mut Inner,
    endpoint: Endpoint,
    table: Option<&str>,
    lang: Option<&str>,
) -> Option<FaultKind> {
    inner.counter += 1;
    let n = inner.counter;
    let upper = table.map(str::to_uppercase);
    let mut chosen = None;
    for (i, f) in inner.faults.iter_mut().enumerate() {
        if f.endpoint != endpoint {
            continue;
        }
        if let Some(ft) = &f.table {
            if upper.as_deref() != Some(ft.to_uppercase().as_str()) {
                continue;
            }
        }
        if let Some(fl) = &f.lang {
            if !fl.eq_ignore_ascii_case(lang.unwrap_or("da")) {
                continue;
            }
        }
        match &mut f.times {
            Some(0) => continue,
            Some(k) => *k -= 1,
            None => {}
        }
        chosen = Some((i, f.kind.clone(), f.times == Some(0)));
        break;
    }
    if let Some((i, kind, exhausted)) = chosen {
        if exhausted {
            inner.faults.remove(i);
        }
        return Some(kind);
    }
    let r = inner.random.as_ref()?;
    if r.kinds.is_empty() || r.rate.is_nan() || r.rate <= 0.0 {
        return None;
    }
    let h = bulk::splitmix64(r.seed ^ bulk::splitmix64(n));
    let u = (h >> 11) as f64 / (1u64 << 53) as f64;
    if u < r.rate {
        let k = (bulk::splitmix64(h) % r.kinds.len() as u64) as usize;
        r.kinds.get(k).cloned()
    } else {
        None
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_TYPE));
    resp
}

fn error_response(e: &ApiError) -> Response {
    json_response(
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
        e.body(),
    )
}

/// Yields body chunks; aborts (with an error) when the emulator stops or
/// after `truncate` bytes.
struct Guarded {
    inner: Box<dyn Iterator<Item = Bytes> + Send>,
    shared: Arc<Shared>,
    truncate: Option<u64>,
    sent: u64,
    finished: bool,
}

impl Iterator for Guarded {
    type Item = io::Result<Bytes>;

    fn next(&mut self) -> Option<io::Result<Bytes>> {
        if self.finished {
            return None;
        }
        if self.shared.stopping.load(Ordering::Relaxed) {
            self.finished = true;
            return Some(Err(io::Error::other("emulator stopped")));
        }
        if let Some(limit) = self.truncate {
            if self.sent >= limit {
                self.finished = true;
                return Some(Err(io::Error::other("emulator fault: truncated body")));
            }
        }
        match self.inner.next() {
            None if self.truncate.is_some() => {
                self.finished = true;
                Some(Err(io::Error::other("emulator fault: truncated body")))
            }
            None => {
                self.finished = true;
                None
            }
            Some(mut chunk) => {
                if let Some(limit) = self.truncate {
                    let room = limit - self.sent;
                    if chunk.len() as u64 > room {
                        chunk.truncate(room as usize);
                    }
                }
                self.sent += chunk.len() as u64;
                Some(Ok(chunk))
            }
        }
    }
}

fn streamed_body(
    shared: Arc<Shared>,
    chunks: Box<dyn Iterator<Item = Bytes> + Send>,
    fault: Option<&FaultKind>,
) -> Body {
    let truncate = match fault {
        Some(FaultKind::Truncate { after_bytes }) => Some(*after_bytes),
        _ => None,
    };
    let guarded = Guarded {
        inner: chunks,
        shared,
        truncate,
        sent: 0,
        finished: false,
    };
    let bps = match fault {
        Some(FaultKind::SlowBody { bytes_per_sec }) => Some((*bytes_per_sec).max(1)),
        _ => None,
    };
    if bps.is_none() && truncate.is_none() {
        return Body::from_stream(futures_util::stream::iter(guarded));
    }
    // Slow and truncated bodies: pieces of ~50 ms each when throttled; before
    // the abort, pause so hyper flushes the head and the bytes already sent
    // (the client must see a broken body, not a failed request).
    let piece = bps.map_or(usize::MAX, |b| (b / 20).max(1) as usize);
    let stream = futures_util::stream::unfold(
        (guarded, Bytes::new()),
        move |(mut it, mut pending)| async move {
            if pending.is_empty() {
                match it.next()? {
                    Ok(b) => pending = b,
                    Err(e) => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        return Some((Err(e), (it, pending)));
                    }
                }
            }
            let n = piece.min(pending.len());
            let out = pending.split_to(n);
            if let Some(bps) = bps {
                tokio::time::sleep(Duration::from_secs_f64(n as f64 / bps as f64)).await;
            }
            Some((Ok(out), (it, pending)))
        },
    );
    Body::from_stream(stream)
}

fn success_response(shared: &Arc<Shared>, success: Success, fault: Option<&FaultKind>) -> Response {
    let (content_type, chunks): (&'static str, Box<dyn Iterator<Item = Bytes> + Send>) =
        match success {
            Success::Json(s) => {
                if !matches!(
                    fault,
                    Some(FaultKind::SlowBody { .. } | FaultKind::Truncate { .. })
                ) {
                    return json_response(StatusCode::OK, s);
                }
                (JSON_TYPE, Box::new(std::iter::once(Bytes::from(s))))
            }
            Success::Bulk { spec, csv_bom } => {
                let bom = csv_bom || matches!(fault, Some(FaultKind::Bom));
                let prefix = bom.then(|| Bytes::from_static(BOM));
                (CSV_TYPE, Box::new(BulkGen::new(*spec, prefix)))
            }
        };
    let mut resp = Response::new(streamed_body(shared.clone(), chunks, fault));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn fault_error_response(kind: &FaultKind) -> Option<Response> {
    match kind {
        FaultKind::Status500 => Some(error_response(&ApiError {
            status: 500,
            code: "SERVER-ERROR".to_string(),
            message: "Intern serverfejl (emuleret fejl)".to_string(),
        })),
        FaultKind::TooManyRequests { retry_after_secs } => {
            let mut resp = error_response(&ApiError {
                status: 429,
                code: "REQUEST-TOOMANYREQUESTS".to_string(),
                message: "For mange forespørgsler (emuleret fejl)".to_string(),
            });
            if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            Some(resp)
        }
        FaultKind::ApiError {
            status,
            code,
            message,
        } => {
            let mut resp = error_response(&ApiError {
                status: *status,
                code: code.clone(),
                message: message.clone(),
            });
            if StatusCode::from_u16(*status).is_err() {
                *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            }
            Some(resp)
        }
        FaultKind::RawBody { content_type, body } => {
            let mut resp = Response::new(Body::from(body.clone()));
            if let Ok(v) = HeaderValue::from_str(content_type) {
                resp.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            Some(resp)
        }
        FaultKind::Redirect { status, location } => {
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = match StatusCode::from_u16(*status) {
                Ok(s) if s.is_redirection() => s,
                _ => StatusCode::FOUND,
            };
            if let Ok(v) = HeaderValue::from_str(location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            Some(resp)
        }
        _ => None,
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let method = parts.method.clone();
    let route = route(parts.uri.path());
    let mut record = RecordedRequest {
        method: method.as_str().to_string(),
        endpoint: route.endpoint,
        table: None,
        lang: None,
        tids: Vec::new(),
        status: 0,
        fault: None,
    };
    let response = handle_inner(&shared, &method, &parts.uri, body, route, &mut record).await;
    record.status = response.status().as_u16();
    shared.lock().log.push(record);
    response
}

async fn handle_inner(
    shared: &Arc<Shared>,
    method: &Method,
    uri: &axum::http::Uri,
    body: Body,
    route: Route,
    record: &mut RecordedRequest,
) -> Response {
    let endpoint = match routed_endpoint(method, uri, &route) {
        Ok(e) => e,
        Err(e) => return error_response(&e),
    };
    let params = match read_params(endpoint, method, uri, body).await {
        Ok(p) => p,
        Err(e) => return error_response(&e),
    };
    let table = requested_table(endpoint, &route, &params);
    note_request(record, table.as_deref(), &params);
    let fault = pick_fault(
        &mut shared.lock(),
        endpoint,
        table.as_deref(),
        record.lang.as_deref(),
    );
    record.fault = fault.as_ref().map(|f| f.name().to_string());
    if let Some(response) = fault_before_answer(shared, fault.as_ref()).await {
        return response;
    }
    let params = match params {
        Ok(p) => p,
        Err(e) => return error_response(&e),
    };
    match answer(
        shared,
        endpoint,
        &route,
        &params,
        table.as_deref(),
        fault.as_ref(),
    ) {
        Ok(success) => success_response(shared, success, fault.as_ref()),
        Err(e) => error_response(&e),
    }
}

/// The endpoint of a GET or POST to a known path, or the API's 404.
fn routed_endpoint(
    method: &Method,
    uri: &axum::http::Uri,
    route: &Route,
) -> Result<Endpoint, ApiError> {
    let not_found = |message: String| ApiError {
        status: 404,
        code: "REQUEST-NOTFOUND".to_string(),
        message,
    };
    let Some(endpoint) = route.endpoint else {
        return Err(not_found(format!("Funktionen findes ikke: {}", uri.path())));
    };
    if *method != Method::POST && *method != Method::GET {
        return Err(not_found(format!("Metoden {method} understøttes ikke")));
    }
    Ok(endpoint)
}

/// The request's parameters, from the query string and (POST) the JSON
/// body; an unreadable body is answered at once.
async fn read_params(
    endpoint: Endpoint,
    method: &Method,
    uri: &axum::http::Uri,
    body: Body,
) -> Result<Result<Params, ApiError>, ApiError> {
    let query = Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let body = axum::body::to_bytes(body, MAX_REQUEST_BODY)
        .await
        .map_err(|_| ApiError::bad_request("REQUEST-INVALID", "Forespørgslen kunne ikke læses"))?;
    Ok(parse_params(
        endpoint,
        query,
        &body,
        *method == Method::POST,
    ))
}

/// The table a request is about (from the path or its parameters).
fn requested_table(
    endpoint: Endpoint,
    route: &Route,
    params: &Result<Params, ApiError>,
) -> Option<String> {
    let param = |keys: &[&str]| {
        params
            .as_ref()
            .ok()
            .and_then(|p| keys.iter().find_map(|k| p.get_str(k)))
    };
    match endpoint {
        Endpoint::Tables | Endpoint::Subjects => None,
        Endpoint::TableInfo => route.path_table.clone().or_else(|| param(&["id", "table"])),
        Endpoint::Data => route.path_table.clone().or_else(|| param(&["table"])),
    }
    .filter(|t| !t.trim().is_empty())
}

/// Records the table and the periods asked for.
fn note_request(
    record: &mut RecordedRequest,
    table: Option<&str>,
    params: &Result<Params, ApiError>,
) {
    record.table = table.map(|t| t.to_uppercase());
    if let Ok(p) = params {
        record.lang = p.get_str("lang");
        record.tids = p
            .variables
            .iter()
            .filter(|(code, _)| code.eq_ignore_ascii_case("tid"))
            .flat_map(|(_, v)| v.iter().cloned())
            .collect();
    }
}

/// What a fault does before the answer: an error response instead of it,
/// or a wait (`Hang`, cut short by the emulator's shutdown).
async fn fault_before_answer(shared: &Arc<Shared>, fault: Option<&FaultKind>) -> Option<Response> {
    let kind = fault?;
    if let Some(response) = fault_error_response(kind) {
        return Some(response);
    }
    if let FaultKind::Hang { secs } = kind {
        let mut rx = shared.shutdown.subscribe();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(*secs)) => {}
            _ = rx.wait_for(|stop| *stop) => {}
        }
    }
    None
}

/// The endpoint's answer from the world.
fn answer(
    shared: &Arc<Shared>,
    endpoint: Endpoint,
    route: &Route,
    params: &Params,
    table: Option<&str>,
    fault: Option<&FaultKind>,
) -> Result<Success, ApiError> {
    match endpoint {
        Endpoint::Subjects => subjects(&shared.lock().world, params),
        Endpoint::Tables => tables(&shared.lock().world, params),
        Endpoint::TableInfo => tableinfo(&shared.lock().world, params, table),
        Endpoint::Data => {
            let t = table.and_then(|id| shared.lock().world.table(id).cloned());
            let format = route
                .path_format
                .clone()
                .or_else(|| params.get_str("format"));
            data(
                t,
                params,
                table,
                format.as_deref(),
                matches!(fault, Some(FaultKind::Interleave)),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands() {
        assert_eq!(danish_thousands(85_210_650), "85.210.650");
        assert_eq!(danish_thousands(1_000_000), "1.000.000");
        assert_eq!(danish_thousands(999), "999");
    }

    #[test]
    fn routes() {
        assert_eq!(route("/v1/tables").endpoint, Some(Endpoint::Tables));
        assert_eq!(route("/V1/TableInfo/").endpoint, Some(Endpoint::TableInfo));
        let r = route("/v1/data/FOLK1A/BULK");
        assert_eq!(r.endpoint, Some(Endpoint::Data));
        assert_eq!(r.path_table.as_deref(), Some("FOLK1A"));
        assert_eq!(r.path_format.as_deref(), Some("BULK"));
        assert_eq!(route("/v1/nope").endpoint, None);
        assert_eq!(route("/tables").endpoint, None);
        assert_eq!(percent_decode("OMR%C3%85DE"), "OMRÅDE");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
