//! Prometheus text-format metrics of a flow run, written atomically to a file
//! (node-exporter textfile collector style) and optionally pushed to a
//! Pushgateway.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use statbank_client::ClientStats;
use sync_state::{ApplyStatus, RunStatus, TableStatus};

use crate::flow::FlowReport;
use crate::Error;

/// What the metrics are computed from.
pub struct MetricsInput<'a> {
    /// The flow run.
    pub report: &'a FlowReport,
    /// HTTP counters of this run.
    pub client: ClientStats,
    /// When the run ended.
    pub now: DateTime<Utc>,
}

const STATUSES: [RunStatus; 4] = [
    RunStatus::Success,
    RunStatus::PartialFailure,
    RunStatus::Failed,
    RunStatus::Skipped,
];

/// Renders the metrics. `previous` is the previous file's text, from which
/// the run counters and the last success time are carried on.
pub fn render(input: &MetricsInput<'_>, previous: Option<&str>) -> String {
    let prev = parse_previous(previous.unwrap_or(""));
    let r = input.report;
    let m = &r.manifest;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let runs: Vec<(String, f64)> = STATUSES
        .iter()
        .map(|s| {
            let label = format!("{{status=\"{s}\"}}");
            let key = format!("statbank_flow_runs_total{label}");
            let before = prev.get(&key).copied().unwrap_or(0.0);
            let add = if *s == r.status { 1.0 } else { 0.0 };
            (label, before + add)
        })
        .collect();
    metric(
        "statbank_flow_runs_total",
        "counter",
        "Flow runs by final status.",
        runs,
    );
    metric(
        "statbank_flow_last_status",
        "gauge",
        "1 for the final status of the last run.",
        STATUSES
            .iter()
            .map(|s| {
                (
                    format!("{{status=\"{s}\"}}"),
                    f64::from(u8::from(*s == r.status)),
                )
            })
            .collect(),
    );
    let now = input.now.timestamp() as f64;
    metric(
        "statbank_flow_last_run_timestamp_seconds",
        "gauge",
        "When the last run ended (unix time).",
        vec![(String::new(), now)],
    );
    let last_success = if r.status.is_ok() {
        Some(now)
    } else {
        prev.get("statbank_flow_last_success_timestamp_seconds")
            .copied()
    };
    if let Some(t) = last_success {
        metric(
            "statbank_flow_last_success_timestamp_seconds",
            "gauge",
            "When the last successful (or skipped) run ended (unix time).",
            vec![(String::new(), t)],
        );
    }
    let count = |st: TableStatus| m.tables.values().filter(|t| t.status == st).count() as f64;
    metric(
        "statbank_sync_tables",
        "gauge",
        "Tables of the last run by sync status.",
        vec![
            ("{status=\"synced\"}".into(), count(TableStatus::Synced)),
            ("{status=\"skipped\"}".into(), count(TableStatus::Skipped)),
            ("{status=\"failed\"}".into(), count(TableStatus::Failed)),
        ],
    );
    metric(
        "statbank_sync_tables_changed",
        "gauge",
        "Tables with changed periods in the last run.",
        vec![(String::new(), m.summary.tables_with_changed_tids as f64)],
    );
    metric(
        "statbank_sync_rows_written",
        "gauge",
        "Rows written to partitions in the last run.",
        vec![(String::new(), m.summary.rows_written as f64)],
    );
    metric(
        "statbank_sync_files_written",
        "gauge",
        "Partition files written in the last run.",
        vec![(String::new(), m.summary.files_written as f64)],
    );
    metric(
        "statbank_sync_bytes_fetched",
        "gauge",
        "Response body bytes received in the last run.",
        vec![(String::new(), input.client.bytes as f64)],
    );
    metric(
        "statbank_sync_http_requests",
        "gauge",
        "HTTP requests sent in the last run (retries included).",
        vec![(String::new(), input.client.requests as f64)],
    );
    metric(
        "statbank_sync_http_retries",
        "gauge",
        "HTTP retries in the last run.",
        vec![(String::new(), input.client.retries as f64)],
    );
    metric(
        "statbank_sync_attempts",
        "gauge",
        "Sync attempts of the last run (1 + retries).",
        vec![(String::new(), f64::from(r.sync_attempts))],
    );
    metric(
        "statbank_sync_duration_seconds",
        "gauge",
        "Wall time of the sync in the last run.",
        vec![(String::new(), r.sync_seconds)],
    );
    metric(
        "statbank_apply_duration_seconds",
        "gauge",
        "Wall time of the DB apply in the last run.",
        vec![(String::new(), r.apply_seconds)],
    );
    let apply_tables = r.apply.as_ref().and_then(|a| a.tables.as_ref());
    let acount = |st: ApplyStatus| {
        apply_tables
            .map(|t| t.iter().filter(|x| x.status == st).count())
            .unwrap_or(0) as f64
    };
    metric(
        "statbank_apply_tables",
        "gauge",
        "Tables of the last DB apply by status.",
        vec![
            ("{status=\"applied\"}".into(), acount(ApplyStatus::Applied)),
            ("{status=\"skipped\"}".into(), acount(ApplyStatus::Skipped)),
            ("{status=\"failed\"}".into(), acount(ApplyStatus::Failed)),
        ],
    );
    let inserted: u64 = apply_tables
        .map(|t| t.iter().filter_map(|x| x.inserted_rows).sum())
        .unwrap_or(0);
    metric(
        "statbank_apply_rows_inserted",
        "gauge",
        "Rows inserted by the last DB apply.",
        vec![(String::new(), inserted as f64)],
    );
    metric(
        "statbank_apply_attempts",
        "gauge",
        "DB apply attempts of the last run.",
        vec![(String::new(), f64::from(r.apply_attempts))],
    );
    out
}

fn parse_previous(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// Writes the metrics file (atomically) and pushes them, as configured.
pub async fn write_metrics(
    file: Option<&Path>,
    push_url: Option<&str>,
    input: &MetricsInput<'_>,
) -> Result<(), Error> {
    let previous = file.and_then(|f| std::fs::read_to_string(f).ok());
    let text = render(input, previous.as_deref());
    if let Some(f) = file {
        if let Some(parent) = f.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::Io {
                path: parent.to_path_buf(),
                source: e,
            })?;
        }
        sync_state::fsio::write_atomic(f, text.as_bytes())?;
    }
    if let Some(url) = push_url {
        let shown = crate::redact_url(url);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Internal(format!("metrics push client: {e}")))?;
        let resp = client
            .put(url)
            .header("content-type", "text/plain; version=0.0.4")
            .body(text)
            .send()
            .await
            .map_err(|_| Error::Internal(format!("pushing metrics to {shown} failed")))?;
        if !resp.status().is_success() {
            return Err(Error::Internal(format!(
                "pushing metrics to {shown}: http status {}",
                resp.status()
            )));
        }
    }
    Ok(())
}
