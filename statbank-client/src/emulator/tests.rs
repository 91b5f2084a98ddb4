//! Emulator tests over real HTTP on loopback.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::bulk::{self, BulkGen, Presentation};
use super::*;

const FOLK1A_JSON: &str = include_str!("../../testdata/tableinfo_FOLK1A_da.json");
const BIL10_JSON: &str = include_str!("../../testdata/tableinfo_BIL10_da.json");
const METROX1_JSON: &str = include_str!("../../testdata/tableinfo_METROX1_en.json");
const REAL_ERRORS: &str = include_str!("../../testdata/errors_real_bodies.txt");
const JSON_TYPE: &str = "text/json; charset=utf-8";
const CSV_TYPE: &str = "text/csv; charset=utf-8";

struct Resp {
    status: u16,
    content_type: String,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("utf-8 body")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

async fn finish(r: reqwest::Response) -> Resp {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let content_type = headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = r.bytes().await.expect("body").to_vec();
    Resp {
        status,
        content_type,
        headers,
        body,
    }
}

async fn get(emu: &Emulator, path: &str) -> Resp {
    let r = client()
        .get(format!("{}{path}", emu.base_url()))
        .send()
        .await
        .expect("GET");
    finish(r).await
}

async fn post(emu: &Emulator, path: &str, body: &Value) -> Resp {
    let r = client()
        .post(format!("{}{path}", emu.base_url()))
        .json(body)
        .send()
        .await
        .expect("POST");
    finish(r).await
}

async fn start(world: World) -> Emulator {
    Emulator::start(world).await.expect("emulator starts")
}

fn folk1a_full() -> EmuTable {
    EmuTable::from_tableinfo_json(FOLK1A_JSON).expect("real FOLK1A tableinfo")
}

fn world_of(tables: Vec<EmuTable>) -> World {
    let mut w = World::new();
    for t in tables {
        w.insert(t);
    }
    w
}

/// The real error bodies, in file order.
fn real_errors() -> Vec<&'static str> {
    REAL_ERRORS.lines().filter(|l| l.starts_with('{')).collect()
}

/// Splits a BULK body into lines, checking CRLF after every line.
fn bulk_lines(body: &str) -> Vec<&str> {
    assert!(body.ends_with("\r\n"), "body must end with CRLF");
    let mut lines: Vec<&str> = body.split("\r\n").collect();
    assert_eq!(lines.pop(), Some(""));
    assert!(lines.iter().all(|l| !l.contains('\n') && !l.contains('\r')));
    lines
}

fn folk1a_request(vars: &[(&str, &[&str])]) -> Value {
    json!({
        "table": "FOLK1A",
        "format": "BULK",
        "variables": vars.iter().map(|(c, v)| json!({"code": c, "values": v})).collect::<Vec<_>>(),
    })
}

/// The row without its INDHOLD.
fn key(line: &str) -> &str {
    line.rsplit_once(';').map(|(k, _)| k).unwrap_or(line)
}

fn indhold(line: &str) -> &str {
    line.rsplit_once(';').map(|(_, v)| v).unwrap_or("")
}

#[tokio::test]
async fn catalog_shape_key_order_and_content_type() {
    let emu = start(World::demo()).await;
    let r = get(&emu, "/tables?lang=da").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type, JSON_TYPE);
    let text = r.text();
    let v = r.json();
    // Compact, raw UTF-8: re-serialising (order-preserving) gives the same bytes.
    assert_eq!(serde_json::to_string(&v).expect("serialise"), text);
    assert!(text.contains("Befolkningen den 1. i måneden"));
    let arr = v.as_array().expect("array");
    assert_eq!(arr.len(), 12);
    let ids: Vec<&str> = arr.iter().filter_map(|t| t["id"].as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted);
    let keys: Vec<&String> = arr[0].as_object().expect("object").keys().collect();
    assert_eq!(
        keys,
        [
            "id",
            "text",
            "unit",
            "updated",
            "firstPeriod",
            "latestPeriod",
            "active",
            "variables"
        ]
    );
    let folk1a = arr
        .iter()
        .find(|t| t["id"] == "FOLK1A")
        .expect("FOLK1A listed");
    assert_eq!(
        folk1a,
        &json!({"id":"FOLK1A","text":"Befolkningen den 1. i kvartalet","unit":"Antal",
                "updated":"2024-11-11T08:00:00","firstPeriod":"2024K1","latestPeriod":"2024K4",
                "active":true,"variables":["område","køn","alder","civilstand","tid"]})
    );

    // POST gives the same bytes; lang defaults to da.
    let p = post(&emu, "/tables", &json!({"lang": "da"})).await;
    assert_eq!(p.body, r.body);
    assert_eq!(get(&emu, "/tables").await.body, r.body);

    // English variable text of time.
    let en = get(&emu, "/tables?lang=en").await.json();
    assert_eq!(
        en[0]["variables"].as_array().and_then(|a| a.last()),
        Some(&json!("time"))
    );

    // Inactive tables only with includeInactive.
    emu.handle().update(|w| {
        if let Some(t) = w.table_mut("BIL10") {
            t.active = false;
        }
    });
    let v = get(&emu, "/tables").await.json();
    assert!(v
        .as_array()
        .expect("array")
        .iter()
        .all(|t| t["id"] != "BIL10"));
    let v = get(&emu, "/tables?includeInactive=true").await.json();
    let bil10 = v
        .as_array()
        .expect("array")
        .iter()
        .find(|t| t["id"] == "BIL10")
        .cloned();
    assert_eq!(bil10.map(|t| t["active"].clone()), Some(json!(false)));
    let v = post(&emu, "/tables", &json!({"includeInactive": true}))
        .await
        .json();
    assert_eq!(v.as_array().map(Vec::len), Some(12));

    // pastDays filters on `updated` (all demo tables are older than 30 days).
    assert_eq!(get(&emu, "/tables?pastDays=30").await.json(), json!([]));

    let bad = get(&emu, "/tables?lang=xx").await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.content_type, JSON_TYPE);
    assert_eq!(bad.json()["errorTypeCode"], "REQUEST-LANGUAGE");
    emu.shutdown().await;
}

/// Sets `updated` and the Tid values of a real tableinfo to what the demo serves.
fn normalise(fixture: &str, updated: &str, tids: &[&str]) -> String {
    let mut v: Value = serde_json::from_str(fixture).expect("fixture");
    v["updated"] = json!(updated);
    let vars = v["variables"].as_array_mut().expect("variables");
    let tid = vars.last_mut().expect("time variable");
    tid["values"] = tids.iter().map(|c| json!({"id": c, "text": c})).collect();
    serde_json::to_string(&v).expect("serialise")
}

#[tokio::test]
async fn tableinfo_matches_real_fixtures() {
    let emu = start(World::demo()).await;
    let expected = normalise(
        FOLK1A_JSON,
        "2024-11-11T08:00:00",
        &["2024K1", "2024K2", "2024K3", "2024K4"],
    );
    let g = get(&emu, "/tableinfo?id=FOLK1A&format=JSON&lang=da").await;
    assert_eq!(g.status, 200);
    assert_eq!(g.content_type, JSON_TYPE);
    assert_eq!(
        g.text(),
        expected,
        "byte-identical to the normalised real tableinfo"
    );
    let p = post(
        &emu,
        "/tableinfo",
        &json!({"table": "folk1a", "format": "JSON", "lang": "da"}),
    )
    .await;
    assert_eq!(p.body, g.body);
    assert_eq!(get(&emu, "/tableinfo/folk1a").await.body, g.body);
    // Key order preserved.
    let keys: Vec<String> = g
        .json()
        .as_object()
        .expect("object")
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        keys,
        [
            "id",
            "text",
            "description",
            "unit",
            "suppressedDataValue",
            "updated",
            "active",
            "contacts",
            "documentation",
            "footnote",
            "variables"
        ]
    );
    // The real response is compact and 10,342 bytes with all 71 quarters.
    let full = start(world_of(vec![folk1a_full()])).await;
    let body = get(&full, "/tableinfo?id=FOLK1A&format=JSON").await.body;
    assert_eq!(body.len(), 10_342);
    full.shutdown().await;

    // BIL10 (footnote with mandatory, no map), cut at the catalog's 2024.
    let years: Vec<String> = (1993..=2024).map(|y| y.to_string()).collect();
    let years: Vec<&str> = years.iter().map(String::as_str).collect();
    let bil10 = get(&emu, "/tableinfo?id=BIL10").await;
    assert_eq!(
        bil10.text(),
        normalise(BIL10_JSON, "2024-08-07T08:00:00", &years)
    );

    // METROX1 in English is served exactly as recorded.
    let metro = get(&emu, "/tableinfo?id=METROX1&lang=en").await;
    let real: Value = serde_json::from_str(METROX1_JSON).expect("fixture");
    assert_eq!(
        metro.text(),
        serde_json::to_string(&real).expect("serialise")
    );
    // ... and in Danish the time variable reads "tid".
    let da = get(&emu, "/tableinfo?id=METROX1&lang=da").await.json();
    assert_eq!(da["variables"][1]["text"], "tid");
    emu.shutdown().await;
}

#[tokio::test]
async fn tableinfo_and_path_errors() {
    let emu = start(World::demo()).await;
    let r = get(&emu, "/tableinfo?id=NOPE&format=JSON").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.content_type, JSON_TYPE);
    assert_eq!(
        r.text(),
        r#"{"errorTypeCode":"EXTRACT-NOTFOUND","message":"Tabel findes ikke: NOPE"}"#
    );
    let r = post(&emu, "/tableinfo", &json!({"format": "JSON"})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["errorTypeCode"], "REQUEST-MISSING");
    let r = get(&emu, "/nothing/here").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.content_type, JSON_TYPE);
    assert_eq!(r.json()["errorTypeCode"], "REQUEST-NOTFOUND");
    let r = client()
        .post(format!("{}/tableinfo", emu.base_url()))
        .body("{not json")
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 400);
    emu.shutdown().await;
}

#[tokio::test]
async fn bulk_matches_real_excerpts() {
    let emu = start(world_of(vec![folk1a_full()])).await;
    // TEST 1.2 of the real recordings.
    let r = post(
        &emu,
        "/data",
        &folk1a_request(&[
            ("OMRÅDE", &["000", "101", "147"]),
            ("KØN", &["1", "2"]),
            ("ALDER", &["IALT"]),
            ("CIVILSTAND", &["TOT"]),
            ("Tid", &["2024K1", "2024K2", "2024K3"]),
        ]),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type, CSV_TYPE);
    assert!(!r.body.starts_with(b"\xEF\xBB\xBF"));
    let text = r.text();
    let lines = bulk_lines(&text);
    assert_eq!(lines.len(), 19);
    assert_eq!(lines[0], "OMRÅDE;KØN;ALDER;CIVILSTAND;TID;INDHOLD");
    assert_eq!(key(lines[1]), "Hele landet;Mænd;Alder i alt;I alt;2024K1");
    assert_eq!(
        key(lines[2]),
        "Hele landet;Kvinder;Alder i alt;I alt;2024K1"
    );
    assert_eq!(
        key(lines[18]),
        "Frederiksberg;Kvinder;Alder i alt;I alt;2024K3"
    );
    assert!(lines[1..]
        .iter()
        .all(|l| !indhold(l).is_empty() && indhold(l).bytes().all(|b| b.is_ascii_digit())));

    // TEST 2.1: KØN=* gives Mænd, Kvinder, I alt (codes 1, 2, TOT).
    let single = |kon: &'static [&'static str], alder: &'static [&'static str]| {
        folk1a_request(&[
            ("OMRÅDE", &["000"]),
            ("KØN", kon),
            ("ALDER", alder),
            ("CIVILSTAND", &["TOT"]),
            ("Tid", &["2024K1"]),
        ])
    };
    let text = post(&emu, "/data", &single(&["*"], &["IALT"])).await.text();
    let kons: Vec<&str> = bulk_lines(&text)[1..]
        .iter()
        .map(|l| l.split(';').nth(1).unwrap_or(""))
        .collect();
    assert_eq!(kons, ["Mænd", "Kvinder", "I alt"]);

    // TEST 2.2: ALDER=1* in code order as strings.
    let text = post(&emu, "/data", &single(&["TOT"], &["1*"])).await.text();
    let ages: Vec<&str> = bulk_lines(&text)[1..]
        .iter()
        .map(|l| l.split(';').nth(2).unwrap_or(""))
        .collect();
    assert_eq!(
        ages.len(),
        37,
        "1, 10-19, 100-125 (the real, sparse answer had 22)"
    );
    assert_eq!(ages[..3], ["1 år", "10 år", "100 år"]);
    assert_eq!(ages.last(), Some(&"19 år"));

    // TEST 3.3: Tid=(-n+5) is the 5 newest quarters.
    let text = post(
        &emu,
        "/data",
        &folk1a_request(&[
            ("OMRÅDE", &["000"]),
            ("KØN", &["TOT"]),
            ("ALDER", &["IALT"]),
            ("CIVILSTAND", &["TOT"]),
            ("Tid", &["(-n+5)"]),
        ]),
    )
    .await
    .text();
    let tids: Vec<&str> = bulk_lines(&text)[1..]
        .iter()
        .map(|l| l.split(';').nth(4).unwrap_or(""))
        .collect();
    assert_eq!(tids, ["2024K3", "2024K4", "2025K1", "2025K2", "2025K3"]);

    // TEST 5.1: KØN=* CIVILSTAND=* Tid=(-n+3).
    let text = post(
        &emu,
        "/data",
        &folk1a_request(&[
            ("OMRÅDE", &["000"]),
            ("KØN", &["*"]),
            ("ALDER", &["IALT"]),
            ("CIVILSTAND", &["*"]),
            ("Tid", &["(-n+3)"]),
        ]),
    )
    .await
    .text();
    let lines = bulk_lines(&text);
    assert_eq!(lines.len(), 46);
    assert_eq!(
        key(lines[1]),
        "Hele landet;Mænd;Alder i alt;Enke/enkemand;2025K1"
    );
    assert_eq!(
        key(lines[2]),
        "Hele landet;Mænd;Alder i alt;Fraskilt;2025K1"
    );
    assert_eq!(key(lines[45]), "Hele landet;I alt;Alder i alt;Ugift;2025K3");

    // Codes keep their leading zeros.
    let mut req = single(&["TOT"], &["IALT"]);
    req["valuePresentation"] = json!("Code");
    let text = post(&emu, "/data", &req).await.text();
    let lines = bulk_lines(&text);
    assert_eq!(lines[0], "OMRÅDE;KØN;ALDER;CIVILSTAND;TID;INDHOLD");
    assert_eq!(key(lines[1]), "000;TOT;IALT;TOT;2024K1");
    emu.shutdown().await;
}

fn test1() -> EmuTable {
    let mut t = EmuTable::synthetic(
        "TEST1",
        &["2023K4", "2024K1", "2024K2"],
        &[("OMRÅDE", 3), ("KØN", 2)],
    );
    t.decimals = 1;
    t
}

fn test1_request(lang: &str, codes: bool, tid: &[&str]) -> Value {
    let mut v = json!({
        "table": "test1", "format": "BULK", "lang": lang,
        "variables": [{"code": "område", "values": ["*"]}, {"code": "KØN", "values": ["*"]}, {"code": "tid", "values": tid}],
    });
    if codes {
        v["valuePresentation"] = json!("Code");
    }
    v
}

#[tokio::test]
async fn bulk_order_codes_texts_and_decimals() {
    let emu = start(world_of(vec![test1()])).await;
    let da = post(&emu, "/data", &test1_request("da", true, &["*"]))
        .await
        .text();
    let lines = bulk_lines(&da);
    assert_eq!(lines[0], "OMRÅDE;KØN;TID;INDHOLD");
    // Time outermost ascending; then codes as strings, last fastest.
    let mut expected = Vec::new();
    for tid in ["2023K4", "2024K1", "2024K2"] {
        for omr in ["1", "2", "TOT"] {
            for kon in ["1", "TOT"] {
                expected.push(format!("{omr};{kon};{tid}"));
            }
        }
    }
    let keys: Vec<&str> = lines[1..].iter().map(|l| key(l)).collect();
    assert_eq!(keys, expected);
    let is_decimal = |s: &str, sep: char| {
        s.split_once(sep).is_some_and(|(a, b)| {
            !a.is_empty() && b.len() == 1 && (a.to_string() + b).bytes().all(|c| c.is_ascii_digit())
        })
    };
    assert!(lines[1..].iter().all(|l| is_decimal(indhold(l), ',')));
    // English: decimal point, otherwise the same bytes.
    let en = post(&emu, "/data", &test1_request("en", true, &["*"]))
        .await
        .text();
    assert!(bulk_lines(&en)[1..]
        .iter()
        .all(|l| is_decimal(indhold(l), '.')));
    assert_eq!(en, da.replace(',', "."));
    // Texts instead of codes; English quarters read 2024Q1.
    let texts = post(&emu, "/data", &test1_request("da", false, &["2024K1"]))
        .await
        .text();
    assert_eq!(key(bulk_lines(&texts)[1]), "område 1;køn 1;2024K1");
    let texts = post(&emu, "/data", &test1_request("en", false, &["2024K1"]))
        .await
        .text();
    assert_eq!(key(bulk_lines(&texts)[1]), "område 1;køn 1;2024Q1");
    // Wildcards on time.
    let k4 = post(&emu, "/data", &test1_request("da", true, &["*K4"]))
        .await
        .text();
    assert!(bulk_lines(&k4)[1..].iter().all(|l| l.contains(";2023K4;")));
    assert_eq!(bulk_lines(&k4).len(), 7);
    let y2024 = post(&emu, "/data", &test1_request("da", true, &["2024*"]))
        .await
        .text();
    assert_eq!(bulk_lines(&y2024).len(), 13);
    // Prefix wildcard on a non-time variable and newest-N / ranges.
    let mut req = test1_request("da", true, &[">=2024K1<=2024K2"]);
    req["variables"][0]["values"] = json!(["T*"]);
    let text = post(&emu, "/data", &req).await.text();
    let keys: Vec<String> = bulk_lines(&text)[1..]
        .iter()
        .map(|l| key(l).to_string())
        .collect();
    assert_eq!(
        keys,
        [
            "TOT;1;2024K1",
            "TOT;TOT;2024K1",
            "TOT;1;2024K2",
            "TOT;TOT;2024K2"
        ]
    );
    // Header follows the request order.
    let req = json!({"table": "TEST1", "format": "BULK", "valuePresentation": "Code",
        "variables": [{"code": "Tid", "values": ["(1)"]}, {"code": "KØN", "values": ["TOT"]}, {"code": "OMRÅDE", "values": ["TOT"]}]});
    let text = post(&emu, "/data", &req).await.text();
    let lines = bulk_lines(&text);
    assert_eq!(lines[0], "TID;KØN;OMRÅDE;INDHOLD");
    assert_eq!(key(lines[1]), "2024K2;TOT;TOT");
    // The value of a cell does not depend on what else was selected.
    let full_row = bulk_lines(&da)
        .iter()
        .find(|l| key(l) == "TOT;TOT;2024K2")
        .map(|l| indhold(l).to_string());
    assert_eq!(full_row.as_deref(), Some(indhold(lines[1])));

    // Deterministic: a second emulator with the same world sends the same bytes.
    let other = start(world_of(vec![test1()])).await;
    assert_eq!(
        post(&other, "/data", &test1_request("da", true, &["*"]))
            .await
            .text(),
        da
    );
    other.shutdown().await;
    emu.shutdown().await;
}

#[tokio::test]
async fn sparse_and_missing_cells() {
    let mut t = EmuTable::synthetic("SPARSE", &["2023", "2024"], &[("A", 20), ("B", 50)]);
    t.density = 0.7;
    t.missing_rate = 0.2;
    let emu = start(world_of(vec![t])).await;
    let req = json!({"table": "SPARSE", "format": "BULK", "valuePresentation": "Code",
        "variables": [{"code": "A", "values": ["*"]}, {"code": "B", "values": ["*"]}, {"code": "Tid", "values": ["*"]}]});
    let text = post(&emu, "/data", &req).await.text();
    let lines = bulk_lines(&text);
    let rows = lines.len() - 1;
    assert!(
        (1200..1600).contains(&rows),
        "about 70% of 2,000 cells: {rows}"
    );
    let missing = lines[1..].iter().filter(|l| indhold(l) == "..").count();
    assert!(
        (150..400).contains(&missing),
        "about 20% missing: {missing}"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn data_errors_match_real_bodies_byte_for_byte() {
    let real = real_errors();
    let emu = start(world_of(vec![folk1a_full()])).await;
    let all: &[&str] = &["*"];
    let check = |r: &Resp| {
        assert_eq!(r.status, 400);
        assert_eq!(r.content_type, JSON_TYPE);
    };
    let r = post(
        &emu,
        "/data",
        &folk1a_request(&[
            ("KØN", all),
            ("ALDER", all),
            ("CIVILSTAND", all),
            ("Tid", &["2024K1"]),
        ]),
    )
    .await;
    check(&r);
    assert_eq!(r.text(), real[0]);
    assert_eq!(
        r.text(),
        r#"{"errorTypeCode":"EXTRACT-NOTALLOWED","message":"Der skal vælges værdier for variabel: OMRÅDE"}"#
    );
    let r = post(
        &emu,
        "/data",
        &folk1a_request(&[
            ("OMRÅDE", all),
            ("KØN", all),
            ("ALDER", all),
            ("CIVILSTAND", all),
        ]),
    )
    .await;
    check(&r);
    assert_eq!(r.text(), real[1]);
    let mut req = folk1a_request(&[
        ("OMRÅDE", all),
        ("KØN", all),
        ("ALDER", all),
        ("CIVILSTAND", all),
        ("Tid", all),
    ]);
    req["timeOrder"] = json!("Ascending");
    let r = post(&emu, "/data", &req).await;
    check(&r);
    assert_eq!(r.text(), real[2]);
    let r = post(
        &emu,
        "/data",
        &folk1a_request(&[
            ("OMRÅDE", &["INVALID999"]),
            ("KØN", all),
            ("ALDER", all),
            ("CIVILSTAND", all),
            ("Tid", &["2024K1"]),
        ]),
    )
    .await;
    check(&r);
    assert_eq!(r.text(), real[3]);
    // Non-streaming formats are capped at 1,000,000 cells (71 × 200,025 here).
    let mut req = folk1a_request(&[
        ("OMRÅDE", all),
        ("KØN", all),
        ("ALDER", all),
        ("CIVILSTAND", all),
        ("Tid", all),
    ]);
    req["format"] = json!("CSV");
    let r = post(&emu, "/data", &req).await;
    check(&r);
    assert_eq!(r.text(), real[4].replace("85.210.650", "14.201.775"));
    // Unknown variable and unknown table.
    let r = post(&emu, "/data", &folk1a_request(&[("FOO", all)])).await;
    check(&r);
    assert_eq!(
        r.text(),
        r#"{"errorTypeCode":"EXTRACT-NOTFOUND","message":"Kan ikke finde variablen: FOO"}"#
    );
    let mut req = folk1a_request(&[("Tid", all)]);
    req["table"] = json!("NOPE");
    let r = post(&emu, "/data", &req).await;
    check(&r);
    assert_eq!(
        r.text(),
        r#"{"errorTypeCode":"EXTRACT-NOTFOUND","message":"Tabel findes ikke: NOPE"}"#
    );
    // CSV under the limit is BULK plus a BOM.
    let small = folk1a_request(&[
        ("OMRÅDE", &["000"]),
        ("KØN", all),
        ("ALDER", &["IALT"]),
        ("CIVILSTAND", &["TOT"]),
        ("Tid", &["2024K1"]),
    ]);
    let mut csv = small.clone();
    csv["format"] = json!("CSV");
    let b = post(&emu, "/data", &small).await.body;
    let c = post(&emu, "/data", &csv).await.body;
    assert_eq!(c, [b"\xEF\xBB\xBF".as_slice(), b.as_slice()].concat());
    emu.shutdown().await;
}

#[tokio::test]
async fn data_over_get_equals_post() {
    let emu = start(World::demo()).await;
    let post_body = post(
        &emu,
        "/data",
        &json!({"table": "BIL10", "format": "BULK", "valuePresentation": "Code",
            "variables": [{"code": "DRIV", "values": ["20200"]}, {"code": "EGEN", "values": ["*"]}, {"code": "Tid", "values": ["2024"]}]}),
    )
    .await;
    assert_eq!(post_body.status, 200);
    let g = get(
        &emu,
        "/data?table=bil10&format=BULK&valuePresentation=Code&DRIV=20200&EGEN=*&Tid=2024",
    )
    .await;
    assert_eq!(g.body, post_body.body);
    let g = get(
        &emu,
        "/data/BIL10/BULK?valuePresentation=Code&DRIV=20200&EGEN=*&Tid=2024",
    )
    .await;
    assert_eq!(g.body, post_body.body);
    assert_eq!(bulk_lines(&g.text()).len(), 19);
    emu.shutdown().await;
}

fn bil10_request(tids: &[&str]) -> Value {
    json!({"table": "BIL10", "format": "BULK", "valuePresentation": "Code",
        "variables": [{"code": "DRIV", "values": ["*"]}, {"code": "EGEN", "values": ["*"]}, {"code": "Tid", "values": tids}]})
}

#[tokio::test]
async fn mutations_are_visible_in_the_next_response() {
    let emu = start(World::demo()).await;
    let h = emu.handle();

    // add_period
    h.add_period("FOLK1A", "2025K1");
    let info = get(&emu, "/tableinfo?id=FOLK1A").await.json();
    let tids = info["variables"][4]["values"]
        .as_array()
        .expect("values")
        .clone();
    assert_eq!(
        tids.last(),
        Some(&json!({"id": "2025K1", "text": "2025K1"}))
    );
    let cat = get(&emu, "/tables").await.json();
    let folk = cat
        .as_array()
        .expect("array")
        .iter()
        .find(|t| t["id"] == "FOLK1A")
        .cloned()
        .expect("FOLK1A");
    assert_eq!(folk["latestPeriod"], "2025K1");
    let r = post(
        &emu,
        "/data",
        &folk1a_request(&[
            ("OMRÅDE", &["000"]),
            ("KØN", &["*"]),
            ("ALDER", &["*"]),
            ("CIVILSTAND", &["*"]),
            ("Tid", &["2025K1"]),
        ]),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(bulk_lines(&r.text()).len() > 100);

    // revise_period changes every value of that period and nothing else.
    let before = post(&emu, "/data", &bil10_request(&["2023", "2024"]))
        .await
        .text();
    h.revise_period("bil10", "2024");
    let after = post(&emu, "/data", &bil10_request(&["2023", "2024"]))
        .await
        .text();
    let (b, a) = (bulk_lines(&before), bulk_lines(&after));
    assert_eq!(a.len(), b.len());
    assert_eq!(a.len(), 1 + 2 * 12 * 18);
    for (x, y) in b[1..].iter().zip(&a[1..]) {
        assert_eq!(key(x), key(y));
        if x.contains(";2024;") {
            assert_ne!(indhold(x), indhold(y));
        } else {
            assert_eq!(x, y);
        }
    }

    // remove_period
    h.remove_period("BIL10", "1993");
    let info = get(&emu, "/tableinfo?id=BIL10").await.json();
    assert_eq!(info["variables"][2]["values"][0]["id"], "1994");
    let r = post(&emu, "/data", &bil10_request(&["1993"])).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["message"], "Kan ikke finde værdien: 1993 (Tid)");

    // set_updated
    h.set_updated("BIL10", "2025-03-25T08:00:00");
    assert_eq!(
        get(&emu, "/tableinfo?id=BIL10").await.json()["updated"],
        "2025-03-25T08:00:00"
    );
    let cat = get(&emu, "/tables").await.json();
    assert!(cat
        .as_array()
        .expect("array")
        .iter()
        .any(|t| t["id"] == "BIL10" && t["updated"] == "2025-03-25T08:00:00"));

    // add_table / remove_table
    h.add_table(EmuTable::synthetic("NYTAB", &["2024"], &[("X", 2)]));
    let cat = get(&emu, "/tables").await.json();
    assert_eq!(cat.as_array().map(Vec::len), Some(13));
    assert_eq!(get(&emu, "/tableinfo?id=nytab").await.status, 200);
    h.remove_table("nytab");
    assert_eq!(get(&emu, "/tableinfo?id=NYTAB").await.status, 400);

    // update / world
    let n = h.update(|w| {
        w.tables.remove("METROX1");
        w.tables.len()
    });
    assert_eq!(n, 11);
    assert_eq!(h.world().tables.len(), 11);
    emu.shutdown().await;
}

#[tokio::test]
async fn status_faults_and_times() {
    let emu = start(World::demo()).await;
    let h = emu.handle();
    h.add_fault(Fault::times(Endpoint::Data, FaultKind::Status500, 1).for_table("bil10"));
    h.add_fault(
        Fault::always(
            Endpoint::TableInfo,
            FaultKind::TooManyRequests {
                retry_after_secs: 7,
            },
        )
        .for_table("KORN2"),
    );
    h.add_fault(Fault::times(
        Endpoint::Tables,
        FaultKind::ApiError {
            status: 503,
            code: "SERVICE-UNAVAILABLE".to_string(),
            message: "Prøv igen".to_string(),
        },
        1,
    ));
    // Other tables are not affected.
    assert_eq!(
        post(&emu, "/data", &bil10_request(&["2024"])).await.status,
        500
    );
    assert_eq!(
        post(&emu, "/data", &bil10_request(&["2024"])).await.status,
        200
    );
    let r = get(&emu, "/tableinfo?id=korn2").await;
    assert_eq!(r.status, 429);
    assert_eq!(
        r.headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("7")
    );
    assert_eq!(get(&emu, "/tableinfo?id=KORN2").await.status, 429);
    assert_eq!(get(&emu, "/tableinfo?id=BIL10").await.status, 200);
    let r = get(&emu, "/tables").await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.text(),
        r#"{"errorTypeCode":"SERVICE-UNAVAILABLE","message":"Prøv igen"}"#
    );
    assert_eq!(get(&emu, "/tables").await.status, 200);
    h.clear_faults();
    assert_eq!(get(&emu, "/tableinfo?id=KORN2").await.status, 200);

    let log = h.requests();
    let faults: Vec<Option<&str>> = log.iter().map(|r| r.fault.as_deref()).collect();
    assert_eq!(
        faults,
        [
            Some("Status500"),
            None,
            Some("TooManyRequests"),
            Some("TooManyRequests"),
            None,
            Some("ApiError"),
            None,
            None
        ]
    );
    let statuses: Vec<u16> = log.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 200, 429, 429, 200, 503, 200, 200]);
    emu.shutdown().await;
}

#[tokio::test]
async fn hang_and_slow_body_faults() {
    let emu = start(World::demo()).await;
    let h = emu.handle();
    h.add_fault(Fault::times(
        Endpoint::Tables,
        FaultKind::Hang { secs: 1 },
        1,
    ));
    let t0 = Instant::now();
    let r = get(&emu, "/tables").await;
    assert_eq!(r.status, 200);
    assert!(
        t0.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t0.elapsed()
    );

    let normal = get(&emu, "/tableinfo?id=SCENE01A").await.body;
    h.add_fault(Fault::times(
        Endpoint::TableInfo,
        FaultKind::SlowBody {
            bytes_per_sec: 4000,
        },
        1,
    ));
    let t0 = Instant::now();
    let slow = get(&emu, "/tableinfo?id=SCENE01A").await.body;
    let expected = Duration::from_secs_f64(normal.len() as f64 / 4000.0);
    assert_eq!(slow, normal);
    assert!(
        t0.elapsed() >= expected.mul_f64(0.8),
        "{:?} < {:?}",
        t0.elapsed(),
        expected
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn truncated_bodies_are_client_errors() {
    let emu = start(World::demo()).await;
    let h = emu.handle();
    for after in [100, 10_000_000] {
        h.add_fault(Fault::times(
            Endpoint::Data,
            FaultKind::Truncate { after_bytes: after },
            1,
        ));
        let r = client()
            .post(format!("{}/data", emu.base_url()))
            .json(&bil10_request(&["*"]))
            .send()
            .await
            .expect("headers arrive");
        assert_eq!(r.status().as_u16(), 200);
        assert!(
            r.bytes().await.is_err(),
            "truncated after {after} bytes must be an error"
        );
    }
    h.add_fault(Fault::times(
        Endpoint::TableInfo,
        FaultKind::Truncate { after_bytes: 10 },
        1,
    ));
    let r = client()
        .get(format!("{}/tableinfo?id=FOLK1A", emu.base_url()))
        .send()
        .await
        .expect("headers arrive");
    assert!(r.bytes().await.is_err());
    // The next request is served normally.
    assert_eq!(
        post(&emu, "/data", &bil10_request(&["2024"])).await.status,
        200
    );
    let faults: Vec<Option<String>> = h.requests().into_iter().map(|r| r.fault).collect();
    assert_eq!(
        faults
            .iter()
            .filter(|f| f.as_deref() == Some("Truncate"))
            .count(),
        3
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn bom_and_interleave_faults() {
    let emu = start(World::demo()).await;
    let h = emu.handle();
    let req = bil10_request(&["2022", "2023", "2024"]);
    let normal = post(&emu, "/data", &req).await.text();
    h.add_fault(Fault::times(Endpoint::Data, FaultKind::Bom, 1));
    let bom = post(&emu, "/data", &req).await.body;
    assert_eq!(
        bom,
        [b"\xEF\xBB\xBF".as_slice(), normal.as_bytes()].concat()
    );
    h.add_fault(Fault::times(Endpoint::Data, FaultKind::Interleave, 1));
    let inter = post(&emu, "/data", &req).await.text();
    let (n, i) = (bulk_lines(&normal), bulk_lines(&inter));
    assert_eq!(n[0], i[0]);
    assert_ne!(n, i);
    let mut ns = n[1..].to_vec();
    let mut is = i[1..].to_vec();
    ns.sort_unstable();
    is.sort_unstable();
    assert_eq!(ns, is, "same rows, different order");
    // Round-robin periods.
    let tids: Vec<&str> = i[1..4]
        .iter()
        .map(|l| l.split(';').nth(2).unwrap_or(""))
        .collect();
    assert_eq!(tids, ["2022", "2023", "2024"]);
    emu.shutdown().await;
}

#[tokio::test]
async fn random_faults_are_deterministic() {
    async fn statuses(rate: f64) -> Vec<u16> {
        let emu = start(World::demo()).await;
        emu.handle().set_random_faults(Some(RandomFaults {
            rate,
            seed: 7,
            kinds: vec![
                FaultKind::Status500,
                FaultKind::TooManyRequests {
                    retry_after_secs: 1,
                },
            ],
        }));
        let mut out = Vec::new();
        for _ in 0..20 {
            out.push(get(&emu, "/tableinfo?id=BIL10").await.status);
        }
        emu.shutdown().await;
        out
    }
    let all = statuses(1.0).await;
    assert!(all.iter().all(|s| *s == 500 || *s == 429));
    assert!(all.contains(&500) && all.contains(&429));
    assert!(statuses(0.0).await.iter().all(|s| *s == 200));
    let half = statuses(0.5).await;
    assert_eq!(half, statuses(0.5).await);
    let hit = half.iter().filter(|s| **s != 200).count();
    assert!((3..=17).contains(&hit), "{hit} of 20");
}

#[tokio::test]
async fn request_log_records_tids() {
    let emu = start(World::demo()).await;
    let h = emu.handle();
    get(&emu, "/tables").await;
    post(
        &emu,
        "/data",
        &folk1a_request(&[
            ("OMRÅDE", &["000"]),
            ("KØN", &["*"]),
            ("ALDER", &["IALT"]),
            ("CIVILSTAND", &["TOT"]),
            ("Tid", &["2024K1", "2024K2"]),
        ]),
    )
    .await;
    get(&emu, "/data?table=folk1a&format=BULK&OMR%C3%85DE=000&K%C3%98N=*&ALDER=IALT&CIVILSTAND=TOT&tid=2024K3,2024K4").await;
    get(&emu, "/tableinfo?id=nope").await;
    let log = h.requests();
    assert_eq!(
        log,
        [
            RecordedRequest {
                method: "GET".into(),
                endpoint: Some(Endpoint::Tables),
                table: None,
                lang: None,
                tids: vec![],
                status: 200,
                fault: None
            },
            RecordedRequest {
                method: "POST".into(),
                endpoint: Some(Endpoint::Data),
                table: Some("FOLK1A".into()),
                lang: None,
                tids: vec!["2024K1".into(), "2024K2".into()],
                status: 200,
                fault: None
            },
            RecordedRequest {
                method: "GET".into(),
                endpoint: Some(Endpoint::Data),
                table: Some("FOLK1A".into()),
                lang: None,
                tids: vec!["2024K3".into(), "2024K4".into()],
                status: 200,
                fault: None
            },
            RecordedRequest {
                method: "GET".into(),
                endpoint: Some(Endpoint::TableInfo),
                table: Some("NOPE".into()),
                lang: None,
                tids: vec![],
                status: 400,
                fault: None
            },
        ]
    );
    h.clear_requests();
    assert!(h.requests().is_empty());
    emu.shutdown().await;
}

/// Rows a full download of every table would return (no HTTP).
fn total_rows(t: &EmuTable) -> usize {
    let mut requested: Vec<(String, Vec<String>)> = t
        .variables
        .iter()
        .map(|v| (v.id.clone(), vec!["*".to_string()]))
        .collect();
    requested.push(("Tid".to_string(), vec!["*".to_string()]));
    let sel = bulk::select(t, &requested).expect("full selection");
    let spec = bulk::build_spec(
        t,
        &sel,
        &Presentation {
            codes: true,
            english: false,
            interleave: false,
        },
    );
    BulkGen::new(spec, None)
        .map(|chunk| chunk.iter().filter(|b| **b == b'\n').count())
        .sum::<usize>()
        - 1
}

#[test]
fn demo_world_covers_every_time_format_and_stays_small() {
    let w = World::demo();
    let expected: BTreeMap<&str, (&str, &str)> = [
        ("FOLK1A", ("2024K1", "2024K4")),
        ("BIL10", ("1993", "2024")),
        ("METROX1", ("2020U01", "2021U49")),
        ("BEFOLK1", ("1971", "2024")),
        ("FOLK1AM", ("2021M10", "2024M10")),
        ("VAN1UGE", ("2024U01", "2024U43")),
        ("DNVALD", ("2024M09D04", "2024M11D26")),
        ("KORN2", ("2000H1", "2023H2")),
        ("SCENE01A", ("2020/2021", "2022/2023")),
        ("HISB7", ("1840:1849", "2022:2023")),
        ("BARLOV1", ("AUG - DEC 2019", "AUG - DEC 2022")),
        ("UGEINT1", ("2014U30-41", "2023U30-41")),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        w.tables.keys().map(String::as_str).collect::<Vec<_>>(),
        expected.keys().copied().collect::<Vec<_>>()
    );
    let mut total = 0;
    for (id, t) in &w.tables {
        let (first, last) = expected[id.as_str()];
        assert_eq!(
            (t.first_period(), t.latest_period()),
            (Some(first), Some(last)),
            "{id}"
        );
        let rows = total_rows(t);
        println!(
            "{id:9} periods={:4} cells/period={:6} density={} missing={} decimals={} rows={rows}",
            t.time_values.len(),
            t.cells_per_period(),
            t.density,
            t.missing_rate,
            t.decimals
        );
        total += rows;
    }
    println!("total rows {total}");
    assert!(total < 300_000, "{total}");
    assert_eq!(w.tables["DNVALD"].time_values.len(), 60);
    assert!(w
        .tables
        .values()
        .any(|t| t.density < 1.0 && t.density >= 0.6));
    assert!(w.tables.values().any(|t| t.missing_rate > 0.0));
    assert!(w.tables.values().any(|t| t.decimals > 0));
    // Scenario round trip.
    assert_eq!(World::from_json(&w.to_json()).expect("round trip"), w);
}

#[test]
fn scenario_files_have_defaults() {
    let w = World::from_json(
        r#"{"tables":{"x":{"id":"x1","time_values":[{"id":"2024"}],"variables":[{"id":"A","values":[{"id":"1","text":"En"}]}]}}}"#,
    )
    .expect("scenario");
    let t = w.table("X1").expect("keyed by upper-case id");
    assert_eq!(t.time_values[0].text, "2024");
    assert_eq!((t.density, t.active, t.decimals), (1.0, true, 0));
    assert!(World::from_json("{").is_err());
}

#[tokio::test]
async fn full_catalog_serves_all_real_tables() {
    let w = World::full_catalog();
    assert_eq!(w.tables.len(), 2339);
    let folk = w.table("FOLK1A").expect("FOLK1A");
    assert_eq!(folk.time_values.len(), 68);
    assert_eq!(folk.updated, "2024-11-11T08:00:00");
    assert_eq!(
        folk.variables
            .iter()
            .map(|v| v.text.as_str())
            .collect::<Vec<_>>(),
        ["område", "køn", "alder", "civilstand"]
    );
    assert_eq!(w.table("HISB7").map(|t| t.time_values.len()), Some(2));
    assert!(w
        .table("DNVALD")
        .is_some_and(|t| t.time_values.len() > 12_000));
    let emu = start(w).await;
    let r = get(&emu, "/tables").await;
    let v = r.json();
    let arr = v.as_array().expect("array");
    assert_eq!(arr.len(), 2339);
    assert!(r.body.len() > 300_000, "{}", r.body.len());
    let nasd = arr.iter().find(|t| t["id"] == "NASD22").expect("NASD22");
    assert_eq!(
        nasd["text"],
        "2.2 Fordeling af \nsekundær indkomst (detaljeret)"
    );
    let r = post(
        &emu,
        "/data",
        &json!({"table": "DNVALD", "format": "BULK", "valuePresentation": "Code",
            "variables": [{"code": "VALUTA", "values": ["*"]}, {"code": "KURSTYPE", "values": ["*"]}, {"code": "Tid", "values": ["(2)"]}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(bulk_lines(&r.text()).len(), 9);
    emu.shutdown().await;
}

#[tokio::test]
async fn shutdown_and_drop_stop_the_server() {
    let emu = start(World::demo()).await;
    let addr = emu.addr();
    assert_eq!(
        emu.base_url(),
        format!("http://127.0.0.1:{}/v1", addr.port())
    );
    assert_eq!(get(&emu, "/tables").await.status, 200);
    emu.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());

    let emu = start(World::demo()).await;
    let addr = emu.addr();
    let handle = emu.handle();
    drop(emu);
    let mut stopped = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(stopped, "dropping the emulator stops the server");
    // Handles stay usable.
    assert_eq!(handle.world().tables.len(), 12);
}

/// A FOLK1A-shaped table with `periods` quarters (200,025 rows each):
/// rows look like `101;1;25;G;2024K1;1234`.
fn bench_table(periods: usize) -> EmuTable {
    let mut t = folk1a_full();
    let codes: Vec<String> = (0..periods)
        .map(|i| format!("{}K{}", 2000 + i / 4, i % 4 + 1))
        .collect();
    t.time_values = codes.iter().map(|c| EmuValue::code(c)).collect();
    t
}

/// Throughput of the BULK generator and of the HTTP server.
/// Run: `cargo test -p statbank-client --features emulator --release -- --ignored --nocapture bench_bulk`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run in release with --ignored --nocapture"]
async fn bench_bulk_rows_per_second() {
    use futures_util::StreamExt;
    let t = bench_table(50);
    let expected_rows = 50 * 200_025;

    // 1. The generator alone.
    let t0 = Instant::now();
    let rows = total_rows(&t);
    let gen_secs = t0.elapsed().as_secs_f64();
    assert_eq!(rows, expected_rows);
    println!(
        "generator: {rows} rows in {gen_secs:.3}s = {:.1} M rows/s",
        rows as f64 / gen_secs / 1e6
    );

    // 2. Over HTTP on loopback, reqwest reading the stream and counting rows.
    let emu = start(world_of(vec![t])).await;
    let req = folk1a_request(&[
        ("OMRÅDE", &["*"]),
        ("KØN", &["*"]),
        ("ALDER", &["*"]),
        ("CIVILSTAND", &["*"]),
        ("Tid", &["*"]),
    ]);
    let mut req = req;
    req["valuePresentation"] = json!("Code");
    let t0 = Instant::now();
    let r = client()
        .post(format!("{}/data", emu.base_url()))
        .json(&req)
        .send()
        .await
        .expect("send");
    let mut stream = r.bytes_stream();
    let (mut lines, mut bytes, mut max_chunk) = (0usize, 0usize, 0usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("chunk");
        bytes += chunk.len();
        max_chunk = max_chunk.max(chunk.len());
        lines += chunk.iter().filter(|b| **b == b'\n').count();
    }
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(lines - 1, expected_rows);
    println!(
        "http: {} rows, {:.1} MB in {secs:.3}s = {:.1} M rows/s, {:.0} MB/s (largest chunk {max_chunk} B)",
        lines - 1,
        bytes as f64 / 1e6,
        (lines - 1) as f64 / secs / 1e6,
        bytes as f64 / secs / 1e6
    );
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        for l in status
            .lines()
            .filter(|l| l.starts_with("VmHWM") || l.starts_with("VmRSS"))
        {
            println!("{l}");
        }
    }
    emu.shutdown().await;
}
