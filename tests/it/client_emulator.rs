//! The real client against the emulator over loopback HTTP: every fault the
//! emulator can inject is either retried to success or surfaces as the right
//! typed error; the full real catalog parses.

use std::time::{Duration, Instant};

use statbank_client::emulator::{EmuTable, Emulator, Endpoint, Fault, FaultKind, World};
use statbank_client::{
    BulkParser, DataRequest, Error, StatbankClient, TableId, TableInfoExt, TablesRequest, Tid,
};
use tests::sync::fault_client;

fn world() -> World {
    let mut w = World::new();
    w.insert(EmuTable::synthetic(
        "T1",
        &["2020", "2021", "2022"],
        &[("OMRÅDE", 4), ("KØN", 3)],
    ));
    w
}

fn t1() -> TableId {
    TableId::new("T1").expect("id")
}

/// Downloads all of T1 and returns the number of rows parsed.
async fn fetch_rows(c: &StatbankClient) -> Result<u64, Error> {
    let (info, _) = c.table_info(&t1()).await?;
    let tids = info.tids().expect("tids");
    let req = DataRequest::all_values_for_periods(t1(), &info, &tids);
    let mut resp = c.data_bulk(&req).await?;
    let mut parser: BulkParser = resp.parser();
    let mut out = Vec::new();
    while let Some(chunk) = resp.next_chunk().await? {
        parser.push(&chunk, &mut out)?;
    }
    let summary = parser.finish(&mut out)?;
    Ok(summary.rows)
}

fn requests_to(emu: &Emulator, ep: Endpoint) -> usize {
    emu.handle()
        .requests()
        .iter()
        .filter(|r| r.endpoint == Some(ep))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn clean_download_has_every_row() {
    let emu = Emulator::start(world()).await.expect("emulator");
    let c = fault_client(&emu.base_url(), 0);
    assert_eq!(fetch_rows(&c).await.expect("rows"), 3 * 4 * 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn status_500_is_retried_until_success() {
    let emu = Emulator::start(world()).await.expect("emulator");
    emu.handle()
        .add_fault(Fault::times(Endpoint::TableInfo, FaultKind::Status500, 2));
    let c = fault_client(&emu.base_url(), 3);
    assert_eq!(fetch_rows(&c).await.expect("rows"), 36);
    assert_eq!(requests_to(&emu, Endpoint::TableInfo), 3);
    assert_eq!(c.stats().retries, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn status_500_beyond_retries_is_a_typed_retryable_error() {
    let emu = Emulator::start(world()).await.expect("emulator");
    emu.handle()
        .add_fault(Fault::always(Endpoint::TableInfo, FaultKind::Status500));
    let c = fault_client(&emu.base_url(), 2);
    let err = c.table_info(&t1()).await.expect_err("must fail");
    assert!(
        matches!(
            err,
            Error::Status { status: 500, .. } | Error::Api { status: 500, .. }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert!(err.to_string().contains("T1"), "{err}");
    assert_eq!(requests_to(&emu, Endpoint::TableInfo), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_requests_honours_retry_after() {
    let emu = Emulator::start(world()).await.expect("emulator");
    emu.handle().add_fault(Fault::times(
        Endpoint::Tables,
        FaultKind::TooManyRequests {
            retry_after_secs: 1,
        },
        1,
    ));
    let c = fault_client(&emu.base_url(), 2);
    let started = Instant::now();
    let tables = c.tables(&TablesRequest::default()).await.expect("tables");
    assert_eq!(tables.len(), 1);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "Retry-After: 1 was not honoured ({:?})",
        started.elapsed()
    );
    assert_eq!(requests_to(&emu, Endpoint::Tables), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn hang_past_timeout_is_a_timeout_and_retried() {
    let emu = Emulator::start(world()).await.expect("emulator");
    emu.handle().add_fault(Fault::times(
        Endpoint::TableInfo,
        FaultKind::Hang { secs: 5 },
        1,
    ));
    let c = fault_client(&emu.base_url(), 0);
    let err = c.table_info(&t1()).await.expect_err("hang");
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(err.is_retryable());
    // The fault was used up: with retries the same call succeeds.
    emu.handle().add_fault(Fault::times(
        Endpoint::TableInfo,
        FaultKind::Hang { secs: 5 },
        1,
    ));
    let c = fault_client(&emu.base_url(), 1);
    c.table_info(&t1()).await.expect("retried after timeout");
}

#[tokio::test(flavor = "multi_thread")]
async fn truncated_body_is_an_error_never_a_shorter_result() {
    let emu = Emulator::start(world()).await.expect("emulator");
    emu.handle().add_fault(Fault::always(
        Endpoint::Data,
        FaultKind::Truncate { after_bytes: 200 },
    ));
    let c = fault_client(&emu.base_url(), 0);
    let err = fetch_rows(&c).await.expect_err("truncated");
    assert!(
        matches!(err, Error::Transport { .. } | Error::Truncated { .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

#[tokio::test(flavor = "multi_thread")]
async fn api_errors_are_typed_and_never_retried() {
    let emu = Emulator::start(world()).await.expect("emulator");
    let c = fault_client(&emu.base_url(), 3);
    // A real EXTRACT-NOTFOUND from the emulator: an unknown period.
    let (info, _) = c.table_info(&t1()).await.expect("info");
    let req = DataRequest::all_values_for_periods(t1(), &info, &[Tid::new("1999").expect("tid")]);
    emu.handle().clear_requests();
    let err = match c.data_bulk(&req).await {
        Err(e) => e,
        Ok(_) => panic!("an unknown period must be an API error"),
    };
    match &err {
        Error::Api { code, status, .. } => {
            assert_eq!(code, "EXTRACT-NOTFOUND");
            assert_eq!(*status, 400);
        }
        other => panic!("expected Api error, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert_eq!(
        requests_to(&emu, Endpoint::Data),
        1,
        "4xx API errors are not retried"
    );

    // An injected REQUEST-LIMIT error body keeps its code and message.
    emu.handle().add_fault(Fault::always(
        Endpoint::TableInfo,
        FaultKind::ApiError {
            status: 400,
            code: "REQUEST-LIMIT".into(),
            message: "For mange forespørgsler".into(),
        },
    ));
    let err = c.table_info(&t1()).await.expect_err("api error");
    match &err {
        Error::Api { code, message, .. } => {
            assert_eq!(code, "REQUEST-LIMIT");
            assert_eq!(message, "For mange forespørgsler");
        }
        other => panic!("expected Api error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bom_prefixed_body_parses_the_same() {
    let emu = Emulator::start(world()).await.expect("emulator");
    emu.handle()
        .add_fault(Fault::always(Endpoint::Data, FaultKind::Bom));
    let c = fault_client(&emu.base_url(), 0);
    assert_eq!(fetch_rows(&c).await.expect("rows"), 36);
}

#[tokio::test(flavor = "multi_thread")]
async fn response_limit_stops_an_oversized_body() {
    let emu = Emulator::start(world()).await.expect("emulator");
    let c = StatbankClient::builder()
        .base_url(emu.base_url())
        .min_interval(Duration::ZERO)
        .max_retries(0)
        .max_response_bytes(Some(300))
        .build()
        .expect("client");
    let err = fetch_rows(&c).await.expect_err("limit");
    assert!(matches!(err, Error::TooLarge { limit: 300, .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn full_real_catalog_parses_through_the_client() {
    let emu = Emulator::start(World::full_catalog())
        .await
        .expect("emulator");
    let c = fault_client(&emu.base_url(), 0);
    let tables = c.tables(&TablesRequest::default()).await.expect("catalog");
    assert_eq!(tables.len(), 2339);
    assert!(tables.rejected.is_empty(), "{:?}", tables.rejected);
    for t in &tables.tables {
        t.table_id().expect("every real id is a valid TableId");
    }
}
