//! Fuzz targets (proptest) for the JSON decoders of the client: the catalog
//! (`/v1/tables`), `/v1/tableinfo` and API error bodies, fed with arbitrary
//! bytes, with real recordings from `testdata/` mutated at random (bit
//! flips, truncations, insertions of JSON tokens, deep nesting, deletions,
//! splices), with the recordings edited as JSON trees (hostile strings,
//! wrong types, removed and repeated nodes) and with generated
//! tableinfo-shaped documents.
//!
//! The edits are made by the mutation engine shared with `sync-state`'s fuzz
//! targets (`sync_state::fuzz_support`, a dev-dependency feature); the
//! seeds, JSON tokens and hostile values are this file's.
//!
//! The decode steps are the client's own: `get_json` turns a body into
//! `Vec<CatalogEntry>` / `TableInfo` with `serde_json::from_slice`, and the
//! sync then calls [`TableInfo::tids`], [`TableInfo::value_counts`],
//! [`CatalogEntry::table_id`] and [`DataRequest::all_values_for_periods`].
//! Every target asserts that nothing panics and that what decodes is usable.
//!
//! The BULK parser's targets (`arbitrary_bytes_never_panic`,
//! `arbitrary_lines_never_panic`) live in `bulk.rs`.
//!
//! The number of cases comes from `PROPTEST_CASES` (default 256, a smoke run
//! of a few seconds); a long run:
//!
//! ```text
//! PROPTEST_CASES=100000 cargo test -p statbank-client --release fuzz::
//! ```

use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::BoxedStrategy;
use proptest::test_runner::Config;
use reqwest::StatusCode;
use sync_state::fuzz_support::{
    self, edit_tree, hostile_string, other_value, Growth, Mutator, TreeEdit,
};

use crate::client::error_from_body;
use crate::model::{Catalog, CatalogEntry, DataRequest, Lang, TableInfo, TableInfoExt};
use crate::{error_chain, Endpoint, Error, TableId, Tid};

/// Longest `tids()` / id error message accepted for hostile input: those
/// quote the input shortened, never whole.
const MAX_MESSAGE: usize = 2_000;

/// A decode error may quote a JSON string of the body whole (serde's
/// `invalid type: string "…"`, Debug-escaped), so its message is bounded by
/// the body's length, not by a constant: it must not grow faster than that.
fn check_decode_message(msg: &str, body: &[u8]) {
    assert!(
        msg.len() <= 3 * body.len() + 500,
        "decode error message of {} bytes for a body of {}",
        msg.len(),
        body.len()
    );
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The seeds: the real tableinfo recordings, and the real catalog head both
/// as recorded (cut off mid-array) and closed after its last whole entry.
fn tableinfo_seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        [
            "tableinfo_FOLK1A_da.json",
            "tableinfo_BIL10_da.json",
            "tableinfo_METROX1_en.json",
        ]
        .iter()
        .map(|n| fixture(n))
        .collect()
    })
}

fn catalog_seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let raw = fixture("tables_da_head_2024-08-12.json");
        let text = String::from_utf8(raw.clone()).expect("fixture is UTF-8");
        let cut = text.rfind("},").expect("complete entries");
        let closed = format!("{}}}]", &text[..cut]).into_bytes();
        // compact form too, as the live service sends it
        let compact = serde_json::to_vec(
            &serde_json::from_slice::<serde_json::Value>(&closed).expect("closed catalog"),
        )
        .expect("encodes");
        vec![closed, compact, raw]
    })
}

/// JSON fragments that are likely to reach interesting decoder states.
const TOKENS: &[&[u8]] = &[
    b"\"",
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b"null",
    b"true",
    b"false",
    b"0",
    b"-",
    b"-0",
    b"1e999999",
    b"-1e-999999",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"\"\\ud800\"",
    b"\"\\udc00\\ud800\"",
    b"\"\\u0000\"",
    b"\"\\/\"",
    b"\xEF\xBB\xBF",
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\"id\":\"Tid\"",
    b"\"time\":true",
    b"\"time\":1",
    b"\"values\":[]",
    b"\"values\":null",
    b"\"values\":[{\"id\":\"2024\"}]",
    b"{\"id\":\"\"}",
    b"{\"id\":\"../../etc\"}",
    b"{\"id\":\"a/b\"}",
    b"{\"id\":\".\"}",
    b"{\"id\":\"..\"}",
    b"{\"id\":\"\\u0000\"}",
    b"\"variables\":[]",
    b"\"variables\":{}",
    b"\"id\":1",
    b"\"updated\":null",
    b"\"active\":\"yes\"",
];

/// The byte-level edits of the recordings.
const MUTATOR: Mutator = Mutator {
    tokens: TOKENS,
    set_byte: true,
};

/// Tree edits with hostile strings (long runs of one character among them)
/// and tableinfo-shaped values; repeated elements grow the lists.
fn arb_tree_edit() -> BoxedStrategy<TreeEdit> {
    let strings = hostile_string(vec![(
        1,
        (any::<char>(), 0usize..2_000)
            .prop_map(|(c, n)| std::iter::repeat_n(c, n).collect())
            .boxed(),
    )]);
    let others = other_value(vec![
        serde_json::json!(false),
        serde_json::json!([{"id": "2024"}]),
        serde_json::json!({"id": "Tid", "time": true, "values": []}),
    ]);
    fuzz_support::arb_tree_edit(strings, others, Growth::Repeat)
}

/// Checks a period code the way the partition store uses it
/// (`<TABLE>/<file_stem>.parquet`).
fn check_tid(t: &Tid) {
    let stem = t.file_stem();
    assert!(!stem.is_empty(), "empty file stem for {t:?}");
    assert!(!stem.contains('/'), "file stem {stem:?} contains '/'");
    let name = format!("{stem}.parquet");
    assert!(name != "." && name != "..", "file name {name:?}");
    assert!(
        name.len() <= sync_state::MAX_PARTITION_FILE_NAME,
        "file name too long for {t:?}"
    );
    assert_eq!(&Tid::from_file_stem(&stem).expect("stem round trips"), t);
}

fn check_message(msg: &str) {
    assert!(
        msg.len() <= MAX_MESSAGE,
        "error message of {} bytes: {}…",
        msg.len(),
        msg.chars().take(200).collect::<String>()
    );
}

/// Decodes a `/v1/tableinfo` body as `StatbankClient::table_info` does and
/// runs everything the sync does with the result.
fn exercise_tableinfo(body: &[u8]) {
    let info = match serde_json::from_slice::<TableInfo>(body) {
        Ok(info) => info,
        Err(source) => {
            let e = Error::Decode {
                endpoint: Endpoint::TableInfo,
                table: Some("FOLK1A".into()),
                source,
            };
            check_decode_message(&error_chain(&e), body);
            return;
        }
    };
    // what decodes re-encodes to the same value
    let again: TableInfo =
        serde_json::from_slice(&serde_json::to_vec(&info).expect("encodes")).expect("re-decodes");
    assert_eq!(again, info);

    let counts = info.value_counts();
    assert_eq!(counts.len(), info.variables.len());
    for (n, v) in counts.iter().zip(&info.variables) {
        assert_eq!(*n, v.values.len());
    }
    let _ = info.id.eq_ignore_ascii_case("FOLK1A");
    match info.tids() {
        Ok(tids) => {
            let time = info.time_variable().expect("tids imply a time variable");
            assert_eq!(tids.len(), time.values.len());
            for t in &tids {
                check_tid(t);
            }
            let _ = sync_state::infer_frequency(&tids);
            let table = TableId::new("FOLK1A").expect("valid id");
            let keep = tids.len().min(3);
            let req = DataRequest::all_values_for_periods(table, &info, &tids[tids.len() - keep..]);
            assert_eq!(req.variables.len(), info.variables.len());
            let body = req.body(Lang::Da);
            let _ = serde_json::to_vec(&body).expect("request body encodes");
        }
        Err(e) => {
            match &e {
                Error::NoTimeVariable { .. } => assert!(info.time_variable().is_none()),
                Error::InvalidPeriod { .. } => assert!(info.time_variable().is_some()),
                Error::TooManyPeriods { count, .. } => assert!(*count > crate::MAX_PERIODS),
                other => panic!("tids() failed with an error it never gives: {other}"),
            }
            check_message(&e.to_string());
        }
    }
}

/// Decodes a `/v1/tables` body as `StatbankClient::tables` does: a body
/// that is not an array is an error naming the endpoint; every element is
/// either used (a valid id, an `updated` in canonical form) or set aside
/// with a reason, never lost.
fn exercise_catalog(body: &[u8]) {
    let catalog = match Catalog::from_json(body) {
        Ok(c) => c,
        Err(source) => {
            let e = Error::Decode {
                endpoint: Endpoint::Tables,
                table: None,
                source,
            };
            check_decode_message(&error_chain(&e), body);
            return;
        }
    };
    if let Ok(items) = serde_json::from_slice::<Vec<serde_json::Value>>(body) {
        assert_eq!(catalog.len(), items.len(), "an entry was lost");
    }
    for r in &catalog.rejected {
        check_message(&r.error);
        assert!(r.id.as_ref().is_none_or(|i| i.chars().count() <= 81));
    }
    for entry in &catalog.tables {
        let id = entry.table_id().expect("a used entry has a valid id");
        let s = id.as_str();
        assert!(!s.is_empty() && s.len() <= sync_state::MAX_TABLE_ID_LEN);
        assert!(s
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
        assert_eq!(s, entry.id.to_ascii_uppercase());
        assert_eq!(
            sync_state::canonical_source_time(&entry.updated).as_deref(),
            Some(entry.updated.as_str()),
            "updated is canonical"
        );
        if let Some(p) = &entry.latest_period {
            if let Ok(t) = Tid::new(p.clone()) {
                check_tid(&t);
            }
        }
    }
}

/// Maps an error response body as the client does for a non-2xx answer.
fn exercise_error_body(body: &[u8], status: u16) {
    let status = StatusCode::from_u16(status).expect("valid status");
    let e = error_from_body(Endpoint::Data, Some("FOLK1A".into()), status, None, body);
    let _ = e.is_retryable();
    let _ = e.api_code();
    let _ = error_chain(&e);
}

/// Bytes drawn mostly from JSON's alphabet, so that decoding gets past the
/// first byte more often than with uniformly random bytes.
fn json_ish_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        6 => proptest::sample::select(b"{}[]:,\"\\ 0123456789-+.eEtrufalsn".to_vec()),
        1 => any::<u8>(),
    ];
    proptest::collection::vec(byte, 0..300)
}

/// A tableinfo-shaped JSON value with hostile strings and odd types in the
/// places the sync reads.
fn arb_tableinfo_value() -> impl Strategy<Value = serde_json::Value> {
    let text = prop_oneof![
        4 => "[0-9A-Za-zÆØÅæøå /:._-]{0,12}",
        2 => any::<String>(),
        1 => Just(String::new()),
        1 => Just("..".to_string()),
        1 => Just("/".to_string()),
        1 => "\\PC{250,300}",
    ];
    let code = prop_oneof![
        20 => "[0-9A-Za-zÆØÅæøå /:._-]{1,12}",
        1 => text.clone(),
    ];
    let value = (code, proptest::option::of(text.clone()))
        .prop_map(|(id, t)| serde_json::json!({"id": id, "text": t}));
    let time = prop_oneof![
        Just(serde_json::json!(true)),
        Just(serde_json::json!(false)),
        Just(serde_json::Value::Null),
    ];
    let variable = (
        prop_oneof![
            Just("Tid".to_string()),
            Just("tid".to_string()),
            text.clone()
        ],
        time,
        proptest::collection::vec(value, 0..20),
    )
        .prop_map(|(id, time, values)| {
            let mut v = serde_json::json!({"id": id, "values": values});
            if !time.is_null() {
                v["time"] = time;
            }
            v
        });
    (text, proptest::collection::vec(variable, 0..6))
        .prop_map(|(id, variables)| serde_json::json!({"id": id, "variables": variables}))
}

proptest! {
    #![proptest_config(Config::default())]

    #[test]
    fn catalog_decode_arbitrary_bytes_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        exercise_catalog(&body);
    }

    #[test]
    fn tableinfo_decode_arbitrary_bytes_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        exercise_tableinfo(&body);
    }

    #[test]
    fn json_alphabet_bytes_never_panic(body in json_ish_bytes()) {
        exercise_catalog(&body);
        exercise_tableinfo(&body);
        exercise_error_body(&body, 400);
    }

    #[test]
    fn mutated_tableinfo_recordings_never_panic(
        seed in any::<Index>(),
        mutations in proptest::collection::vec(MUTATOR.arb_mutation(), 1..8),
    ) {
        let seeds = tableinfo_seeds();
        let body = MUTATOR.mutate(&seeds[seed.index(seeds.len())], &mutations);
        exercise_tableinfo(&body);
    }

    #[test]
    fn mutated_catalog_recordings_never_panic(
        seed in any::<Index>(),
        mutations in proptest::collection::vec(MUTATOR.arb_mutation(), 1..8),
    ) {
        let seeds = catalog_seeds();
        let body = MUTATOR.mutate(&seeds[seed.index(seeds.len())], &mutations);
        exercise_catalog(&body);
    }

    #[test]
    fn edited_tableinfo_recordings_never_panic(
        seed in any::<Index>(),
        edits in proptest::collection::vec(arb_tree_edit(), 1..4),
        mutations in proptest::collection::vec(MUTATOR.arb_mutation(), 0..2),
    ) {
        let seeds = tableinfo_seeds();
        let body = MUTATOR.mutate(&edit_tree(&seeds[seed.index(seeds.len())], &edits), &mutations);
        exercise_tableinfo(&body);
    }

    #[test]
    fn edited_catalog_recordings_never_panic(
        seed in any::<Index>(),
        edits in proptest::collection::vec(arb_tree_edit(), 1..4),
        mutations in proptest::collection::vec(MUTATOR.arb_mutation(), 0..2),
    ) {
        let seeds = catalog_seeds();
        // the two seeds that are JSON (the third is the cut-off recording)
        let body = MUTATOR.mutate(&edit_tree(&seeds[seed.index(2)], &edits), &mutations);
        exercise_catalog(&body);
    }

    #[test]
    fn structured_tableinfo_never_panics(value in arb_tableinfo_value()) {
        let body = serde_json::to_vec(&value).expect("encodes");
        exercise_tableinfo(&body);
    }

    #[test]
    fn error_bodies_never_panic(
        body in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..600),
            "\\{\"errorTypeCode\":\"[A-Z-]{0,20}\",\"message\":\"\\PC{0,400}\"\\}"
                .prop_map(String::into_bytes),
        ],
        status in prop_oneof![Just(400u16), Just(404), Just(429), Just(500), 100u16..1000],
    ) {
        exercise_error_body(&body, status);
    }

    /// A period code of 100k characters (any character) in the time variable
    /// is rejected by `tids()` with an error that quotes it shortened.
    #[test]
    fn a_huge_period_code_is_rejected_by_tids(
        c in any::<char>(),
        n in 100_000usize..100_100,
        at in 0usize..3,
    ) {
        let huge: String = std::iter::repeat_n(c, n).collect();
        let mut values = vec![serde_json::json!({"id": "2024"}), serde_json::json!({"id": "2025"})];
        values.insert(at, serde_json::json!({"id": huge}));
        let body = serde_json::to_vec(&serde_json::json!({
            "id": "X",
            "variables": [
                {"id": "OMRÅDE", "values": [{"id": "000"}]},
                {"id": "Tid", "time": true, "values": values},
            ],
        }))
        .expect("encodes");
        let info: TableInfo = serde_json::from_slice(&body).expect("decodes");
        let err = info.tids().expect_err("a 100k-character period code is rejected");
        prop_assert!(matches!(err, Error::InvalidPeriod { .. }), "{err:?}");
        let msg = err.to_string();
        prop_assert!(msg.len() < 1_000, "message of {} bytes", msg.len());
    }
}

/// The sync plans one partition file per period and a request per batch of
/// periods: a tableinfo whose time variable lists millions of periods (no
/// real table has more than a few thousand) should be rejected by `tids()`
/// rather than planned.
///
/// Found by this fuzzing; fixed: `tids()` rejects more than `MAX_PERIODS`
/// periods, and JSON answers are capped at `MAX_JSON_BYTES`.
#[test]
fn a_time_variable_with_millions_of_values_is_rejected_by_tids() {
    let n = 2_000_000;
    let mut body = Vec::with_capacity(n * 20);
    body.extend_from_slice(br#"{"id":"X","variables":[{"id":"Tid","time":true,"values":["#);
    for i in 0..n {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(format!(r#"{{"id":"{i}"}}"#).as_bytes());
    }
    body.extend_from_slice(b"]}]}");
    let info: TableInfo = serde_json::from_slice(&body).expect("decodes");
    assert_eq!(info.value_counts(), vec![n]);
    assert!(
        info.tids().is_err(),
        "tids() accepted a time variable with {n} values"
    );
}

#[test]
fn the_seeds_decode_before_mutation() {
    for seed in tableinfo_seeds() {
        let info: TableInfo = serde_json::from_slice(seed).expect("tableinfo seed decodes");
        assert!(!info.tids().expect("tids").is_empty());
    }
    let seeds = catalog_seeds();
    for seed in &seeds[..2] {
        let entries: Vec<CatalogEntry> =
            serde_json::from_slice(seed).expect("catalog seed decodes");
        assert!(entries.iter().all(|e| e.table_id().is_ok()));
    }
    assert!(serde_json::from_slice::<Vec<CatalogEntry>>(&seeds[2]).is_err());
}
