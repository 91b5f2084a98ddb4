//! `statbank-flow` behaviour: retries
//! over emulator faults, apply only when something changed, the schedule,
//! metrics and the alert webhook. DB tests use the real Postgres of
//! `tests::pg`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use bins::flow::{parse_cron, run_flow, run_schedule, FlowOptions};
use bins::SyncOptions;
use statbank_client::emulator::{EmuTable, Emulator, Endpoint, Fault, FaultKind, World};
use sync_state::{list_runs, ApplyStatus, DataDir, RunManifest, RunStatus};
use tests::pg::test_db;
use tests::sync::{at_hours, fast_client, options};

fn world() -> World {
    let mut w = World::new();
    w.insert(EmuTable::synthetic(
        "FLOWT",
        &["2021", "2022", "2023"],
        &[("OMRÅDE", 3), ("KØN", 2)],
    ));
    w
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn flow_opts(sync: SyncOptions, db: Option<&str>) -> FlowOptions {
    let mut o = FlowOptions::new(sync);
    o.database_url = db.map(bins::redact::DatabaseUrl::new);
    o.sync_retry_delays = vec![Duration::from_millis(20); 3];
    o.apply_retry_delays = vec![Duration::from_millis(20)];
    o.apply.create_missing = true;
    o
}

#[test]
fn third_sync_attempt_succeeds_and_the_delta_is_applied_then_nothing_when_unchanged() -> Result<()>
{
    let db = test_db()?;
    let mut pg = db.client()?;
    pg.batch_execute("CREATE SCHEMA fact")?;
    let rt = runtime();
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    rt.block_on(async {
        let emu = Emulator::start(world()).await?;
        let client = fast_client(&emu.base_url(), 0);
        emu.handle()
            .add_fault(Fault::times(Endpoint::Tables, FaultKind::Status500, 2));
        let metrics = dir.join("metrics/statbank.prom");
        let mut o = flow_opts(options(dir, at_hours(0), true), Some(db.url()));
        o.metrics_file = Some(metrics.clone());
        let report = run_flow(&client, &o).await?;
        assert_eq!(report.sync_attempts, 3);
        assert_eq!(report.status, RunStatus::Success, "{report:?}");
        let apply = report.apply.as_ref().expect("apply ran");
        assert_eq!(apply.status, RunStatus::Success);
        let t = &apply.tables.as_ref().expect("tables")[0];
        assert_eq!(t.status, ApplyStatus::Applied);
        // Two failed attempts left failed manifests; the third is the run.
        let runs = list_runs(&DataDir::local(dir))?;
        assert_eq!(runs.len(), 3);
        let m = RunManifest::load(&DataDir::local(dir), &report.run_id)?;
        assert_eq!(
            m.db_apply.as_ref().map(|a| a.status),
            Some(RunStatus::Success)
        );
        assert_eq!(m.flow.as_ref().map(|f| f.sync_attempts), Some(3));
        let prom = std::fs::read_to_string(&metrics)?;
        assert!(
            prom.contains("statbank_flow_runs_total{status=\"success\"} 1"),
            "{prom}"
        );
        assert!(prom.contains("statbank_sync_attempts 3"));
        assert!(prom.contains("statbank_sync_rows_written 18"));
        assert!(prom.contains("statbank_flow_last_success_timestamp_seconds"));

        // Nothing changed: no apply, recorded as skipped / no_changed_tids.
        let o = {
            let mut o = flow_opts(options(dir, at_hours(1), true), Some(db.url()));
            o.metrics_file = Some(metrics.clone());
            o
        };
        let report = run_flow(&client, &o).await?;
        assert_eq!(report.status, RunStatus::Success);
        assert_eq!(report.apply_attempts, 0);
        let m = RunManifest::load(&DataDir::local(dir), &report.run_id)?;
        let a = m.db_apply.expect("db_apply recorded");
        assert_eq!(a.status, RunStatus::Skipped);
        assert_eq!(a.reason.as_deref(), Some("no_changed_tids"));
        let prom = std::fs::read_to_string(&metrics)?;
        assert!(
            prom.contains("statbank_flow_runs_total{status=\"success\"} 2"),
            "{prom}"
        );
        emu.shutdown().await;
        anyhow::Ok(())
    })?;
    drop(rt);
    let n: i64 = pg.query_one("SELECT count(*) FROM fact.flowt", &[])?.get(0);
    assert_eq!(n, 18);
    Ok(())
}

#[test]
fn without_a_database_the_flow_syncs_and_says_the_apply_did_not_run() -> Result<()> {
    let rt = runtime();
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    rt.block_on(async {
        let emu = Emulator::start(world()).await?;
        let client = fast_client(&emu.base_url(), 0);
        let report = run_flow(&client, &flow_opts(options(dir, at_hours(0), true), None)).await?;
        assert_eq!(report.status, RunStatus::Success);
        assert!(report
            .apply_note
            .as_deref()
            .unwrap_or("")
            .contains("NOT run"));
        let m = RunManifest::load(&DataDir::local(dir), &report.run_id)?;
        assert_eq!(
            m.db_apply.and_then(|a| a.reason).as_deref(),
            Some("no_database_url")
        );
        anyhow::Ok(())
    })
}

/// A webhook receiver on loopback that records the JSON bodies it gets.
async fn webhook() -> Result<(String, Arc<Mutex<Vec<serde_json::Value>>>)> {
    use axum::routing::{post, put};
    let got: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let g = got.clone();
    let g2 = got.clone();
    let app = axum::Router::new()
        .route(
            "/hook",
            post(move |axum::Json(v): axum::Json<serde_json::Value>| {
                let g = g.clone();
                async move {
                    g.lock().expect("lock").push(v);
                    "ok"
                }
            }),
        )
        // A Pushgateway stand-in: the pushed text is recorded as a string.
        .route(
            "/metrics/job/statbank_sync",
            put(move |body: String| {
                let g = g2.clone();
                async move {
                    g.lock()
                        .expect("lock")
                        .push(serde_json::json!({"pushed": body}));
                    "ok"
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{addr}/hook"), got))
}

#[test]
fn failures_alert_the_webhook_and_exit_statuses_follow() -> Result<()> {
    let db = test_db()?;
    let rt = runtime();
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    rt.block_on(async {
        let emu = Emulator::start(world()).await?;
        let client = fast_client(&emu.base_url(), 0);
        let (url, got) = webhook().await?;

        // Catalog down for every attempt: failed, alert delivered, no apply.
        emu.handle()
            .add_fault(Fault::always(Endpoint::Tables, FaultKind::Status500));
        let mut o = flow_opts(options(dir, at_hours(0), true), Some(db.url()));
        o.alert_webhook = Some(url.clone());
        let report = run_flow(&client, &o).await?;
        assert_eq!(report.status, RunStatus::Failed);
        assert_eq!(report.sync_attempts, 4);
        assert_eq!(report.apply_attempts, 0);
        let alert = report.alert.clone().expect("alert sent");
        assert!(alert.delivered, "{alert:?}");
        let m = RunManifest::load(&DataDir::local(dir), &report.run_id)?;
        assert_eq!(
            m.flow.and_then(|f| f.alert).map(|a| a.delivered),
            Some(true)
        );
        {
            let bodies = got.lock().expect("lock");
            assert_eq!(bodies.len(), 1);
            assert_eq!(bodies[0]["status"], "failed");
            assert_eq!(bodies[0]["run_id"], report.run_id.as_str());
        }

        // One table failing: partial failure names it (no database here: the
        // apply is not run, only the sync's failure is alerted); the metrics
        // push carries the failing table too.
        emu.handle().clear_faults();
        let mut w2 = EmuTable::synthetic("OTHER", &["2020"], &[("X", 2)]);
        w2.updated = "2026-01-01T08:00:00".into();
        emu.handle().add_table(w2);
        emu.handle()
            .add_fault(Fault::always(Endpoint::TableInfo, FaultKind::Status500).for_table("OTHER"));
        let mut o = flow_opts(options(dir, at_hours(1), true), None);
        o.alert_webhook = Some(url.clone());
        o.metrics_push_url = Some(url.replace("/hook", "/metrics/job/statbank_sync"));
        let report = run_flow(&client, &o).await?;
        assert_eq!(report.status, RunStatus::PartialFailure);
        {
            let bodies = got.lock().expect("lock");
            assert_eq!(bodies.len(), 3, "alert and metrics push");
            assert_eq!(bodies[1]["status"], "partial_failure");
            assert_eq!(bodies[1]["failed_tables"][0]["table"], "OTHER");
            let text = bodies[1]["text"].as_str().unwrap_or("");
            assert!(
                text.contains("partial_failure") && text.contains("OTHER"),
                "{text}"
            );
            assert_eq!(bodies[1]["summary"]["tables_failed"], 1);
            let pushed = bodies[2]["pushed"].as_str().unwrap_or("");
            assert!(
                pushed.contains("statbank_sync_tables{status=\"failed\"} 1"),
                "{pushed}"
            );
            assert!(
                pushed.contains("statbank_flow_runs_total{status=\"partial_failure\"} 1"),
                "{pushed}"
            );
        }

        // An unreachable webhook is recorded as not delivered.
        let mut o = flow_opts(options(dir, at_hours(2), true), None);
        o.alert_webhook = Some("http://127.0.0.1:9/hook".into());
        let report = run_flow(&client, &o).await?;
        assert_eq!(report.status, RunStatus::PartialFailure);
        let alert = report.alert.expect("alert attempted");
        assert!(!alert.delivered);
        assert!(alert.error.is_some());
        emu.shutdown().await;
        anyhow::Ok(())
    })
}

#[test]
fn the_schedule_fires_on_time_and_runs_never_overlap() -> Result<()> {
    let rt = runtime();
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().to_path_buf();
    rt.block_on(async {
        let emu = Emulator::start(world()).await?;
        let client = fast_client(&emu.base_url(), 0);
        // Every 2 seconds (6-field cron with seconds).
        let cron = parse_cron("*/2 * * * * *")?;
        let mut sync = SyncOptions::new(&dir)?;
        sync.gate.force = true;
        let o = flow_opts(sync, None);
        let mut fired = Vec::new();
        let started = chrono::Utc::now();
        let runs = run_schedule(&client, &o, &cron, Some(2), |r| {
            let now = chrono::Utc::now();
            fired.push((now, r.as_ref().map(|x| x.status).ok()));
        })
        .await?;
        assert_eq!(runs, 2);
        assert_eq!(fired.len(), 2);
        for (t, status) in &fired {
            assert_eq!(*status, Some(RunStatus::Success));
            assert!(*t > started);
        }
        // Each run started on an even second: its run id is its start time.
        let ids = list_runs(&DataDir::local(&dir))?;
        assert_eq!(ids.len(), 2);
        for id in &ids {
            let secs: u32 = id.as_str()[13..15].parse()?;
            assert_eq!(secs % 2, 0, "run {id} did not start on the schedule");
        }
        assert_ne!(ids[0], ids[1], "two runs, not one overwritten");
        emu.shutdown().await;
        anyhow::Ok(())
    })
}

#[test]
fn a_run_whose_apply_failed_is_applied_by_the_next_flow() -> Result<()> {
    let db = test_db()?;
    let mut pg = db.client()?;
    pg.batch_execute("CREATE SCHEMA fact")?;
    let rt = runtime();
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let first = rt.block_on(async {
        let emu = Emulator::start(world()).await?;
        let client = fast_client(&emu.base_url(), 0);
        // The database is unreachable for the first flow: its apply fails.
        let o = flow_opts(
            options(dir, at_hours(0), true),
            Some("postgres://postgres@127.0.0.1:1/test"),
        );
        let first = run_flow(&client, &o).await?;
        assert_eq!(first.status, RunStatus::PartialFailure, "{first:?}");
        assert!(first.apply_error.is_some());
        assert_eq!(
            sync_state::pending_runs(&DataDir::local(dir))?,
            vec![first.run_id.clone()]
        );
        // Nothing changes upstream; the next flow has a working database.
        let o = flow_opts(options(dir, at_hours(1), true), Some(db.url()));
        let second = run_flow(&client, &o).await?;
        assert_eq!(second.status, RunStatus::Success, "{second:?}");
        let m = RunManifest::load(&DataDir::local(dir), &second.run_id)?;
        let earlier = m.flow.expect("flow").earlier_runs_applied;
        assert!(
            matches!(&earlier[0], sync_state::EarlierRun::Applied { run_id, status: Some(RunStatus::Success), .. } if *run_id == first.run_id),
            "{earlier:?}"
        );
        assert!(sync_state::pending_runs(&DataDir::local(dir))?.is_empty());
        emu.shutdown().await;
        anyhow::Ok(first)
    })?;
    drop(rt);
    let n: i64 = pg.query_one("SELECT count(*) FROM fact.flowt", &[])?.get(0);
    assert_eq!(n, 18, "the first run's periods reached the database");
    let m = RunManifest::load(&DataDir::local(dir), &first.run_id)?;
    assert_eq!(m.db_apply.map(|a| a.status), Some(RunStatus::Success));
    Ok(())
}

#[test]
fn a_scheduled_run_is_never_silently_skipped() -> Result<()> {
    let rt = runtime();
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    rt.block_on(async {
        let emu = Emulator::start(world()).await?;
        let client = fast_client(&emu.base_url(), 0);
        let (url, got) = webhook().await?;
        let metrics = dir.join("statbank.prom");
        let flow = |now, force: bool| {
            let mut o = flow_opts(options(dir, now, force), None);
            o.scheduled = true;
            o.alert_webhook = Some(url.clone());
            o.metrics_file = Some(metrics.clone());
            o
        };
        let first = run_flow(&client, &flow(at_hours(0), true)).await?;
        assert_eq!(first.status, RunStatus::Success);

        // A scheduled run one day later: skipped by the gate, and said so.
        let r = run_flow(&client, &flow(at_hours(24), false)).await?;
        assert_eq!(r.status, RunStatus::Skipped);
        let alert = r.alert.expect("a skipped scheduled run alerts");
        assert!(alert.delivered, "{alert:?}");
        {
            let bodies = got.lock().expect("lock");
            let text = bodies[0]["text"].as_str().unwrap_or("");
            assert!(text.contains("skipped by the weekly gate"), "{text}");
        }
        let prom = std::fs::read_to_string(&metrics)?;
        assert!(
            prom.contains("statbank_flow_gate_skipped_total{scheduled=\"true\"} 1"),
            "{prom}"
        );
        let success_at = |prom: &str| {
            prom.lines()
                .find_map(|l| l.strip_prefix("statbank_flow_last_success_timestamp_seconds "))
                .map(str::to_string)
        };
        assert_eq!(
            success_at(&prom),
            Some(at_hours(0).timestamp().to_string()),
            "a skipped run does not count as a success"
        );

        // The next weekly run fires 3 s early (scheduler jitter, a slow
        // catalog answer last week): the gate opens all the same.
        let early = at_hours(7 * 24) - chrono::Duration::seconds(3);
        let r = run_flow(&client, &flow(early, false)).await?;
        assert_eq!(r.status, RunStatus::Success, "{:?}", r.manifest.catalog);
        assert!(r.manifest.catalog.polled);
        assert!(r.alert.is_none());
        let prom = std::fs::read_to_string(&metrics)?;
        assert_eq!(success_at(&prom), Some(early.timestamp().to_string()));
        emu.shutdown().await;
        anyhow::Ok(())
    })
}

/// `--reconcile-every 1`: after each apply the flow reconciles; damage done
/// behind its back raises the alert and, with `--reconcile-repair`, is
/// repaired; metrics report it.
#[test]
fn the_flow_reconciles_alerts_on_damage_and_repairs_it() -> Result<()> {
    let db = test_db()?;
    let mut pg = db.client()?;
    pg.batch_execute("CREATE SCHEMA fact")?;
    let rt = runtime();
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    rt.block_on(async {
        let emu = Emulator::start(world()).await?;
        let client = fast_client(&emu.base_url(), 0);
        let (url, got) = webhook().await?;
        let metrics = dir.join("statbank.prom");
        let flow = |hours: i64, repair: bool| {
            let mut o = flow_opts(options(dir, at_hours(hours), true), Some(db.url()));
            o.alert_webhook = Some(url.clone());
            o.metrics_file = Some(metrics.clone());
            o.reconcile_every = 1;
            o.reconcile_repair = repair;
            o
        };
        let first = run_flow(&client, &flow(0, false)).await?;
        assert_eq!(first.status, RunStatus::Success, "{first:?}");
        let r = first.reconcile.clone().expect("reconciled");
        assert_eq!(r.status, Some(sync_state::ReconcileStatus::Agrees));
        assert!(
            got.lock().expect("lock").is_empty(),
            "no alert when all agrees"
        );

        tokio::task::block_in_place(|| {
            pg.batch_execute("DELETE FROM fact.flowt WHERE omrade = '1'")
        })?;
        let second = run_flow(&client, &flow(24, false)).await?;
        assert_eq!(second.status, RunStatus::PartialFailure);
        let r = second.reconcile.clone().expect("reconciled");
        assert_eq!(r.status, Some(sync_state::ReconcileStatus::Differs));
        let m = RunManifest::load(&DataDir::local(dir), &second.run_id)?;
        assert_eq!(m.flow.and_then(|f| f.reconcile), Some(r));
        let text = got.lock().expect("lock")[0]["text"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(text.contains("reconcile"), "{text}");
        let prom = std::fs::read_to_string(&metrics)?;
        assert!(
            prom.contains("statbank_reconcile_periods{kind=\"differs\"} 3"),
            "{prom}"
        );

        let third = run_flow(&client, &flow(48, true)).await?;
        let r = third.reconcile.clone().expect("reconciled");
        assert_eq!(r.status, Some(sync_state::ReconcileStatus::Repaired));
        assert_eq!(third.status, RunStatus::Success, "{third:?}");
        let n: i64 = tokio::task::block_in_place(|| {
            pg.query_one("SELECT count(*) FROM fact.flowt WHERE omrade = '1'", &[])
        })?
        .get(0);
        assert!(n > 0, "repaired");
        emu.shutdown().await;
        Ok(())
    })
}
