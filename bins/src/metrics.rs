//! Prometheus metrics of a flow run in the text exposition format (rendered
//! by the `prometheus` crate), written atomically to a file for
//! node_exporter's textfile collector (mode 0644) and optionally pushed to
//! a Pushgateway.
//!
//! Counters are carried on from the previous file (read with
//! `prometheus-parse`). The last success time advances only on a run that
//! ended `success`; without a previous file (a fresh pod) it is recovered
//! from the newest successful run manifest.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus::{CounterVec, Encoder, Gauge, GaugeVec, Opts, Registry, TextEncoder};
use statbank_client::ClientStats;
use sync_state::{ApplyStatus, RunStatus, SyncState, TableStatus};

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
    /// The sync state after the run (last catalog poll, failing tables,
    /// verification debt), when it could be read.
    pub state: Option<&'a SyncState>,
    /// Runs whose apply has not succeeded yet (`None`: they could not be
    /// counted, and the series is left out rather than shown as 0).
    pub pending_runs: Option<usize>,
    /// When the newest run that ended `success` finished, from the run
    /// manifests (used when there is no previous metrics file).
    pub last_success: Option<DateTime<Utc>>,
    /// The run was started by a schedule (a gate skip is then worth an alert).
    pub scheduled: bool,
    /// The newest reconcile report, when there is one.
    pub last_reconcile: Option<&'a sync_state::ReconcileReport>,
}

const STATUSES: [RunStatus; 4] = [
    RunStatus::Success,
    RunStatus::PartialFailure,
    RunStatus::Failed,
    RunStatus::Skipped,
];

/// Counters and the last success time of the previous metrics file.
#[derive(Debug, Default)]
struct Previous {
    /// `(metric, label value)` → value.
    counters: HashMap<(String, String), f64>,
    last_success: Option<f64>,
}

impl Previous {
    fn parse(text: &str) -> Previous {
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let Ok(scrape) = prometheus_parse::Scrape::parse(lines) else {
            tracing::warn!("the previous metrics file cannot be parsed: counters start at 0");
            return Previous::default();
        };
        let mut p = Previous::default();
        for s in scrape.samples {
            let v = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => continue,
            };
            if s.metric == "statbank_flow_last_success_timestamp_seconds" {
                p.last_success = Some(v);
            } else if s.metric.ends_with("_total") {
                let label = s.labels.values().next().cloned().unwrap_or_default();
                p.counters.insert((s.metric, label), v);
            }
        }
        p
    }

    fn counter(&self, metric: &str, label: &str) -> f64 {
        self.counters
            .get(&(metric.to_string(), label.to_string()))
            .copied()
            .unwrap_or(0.0)
    }
}

/// Registers metrics into one registry; registration errors (a name
/// registered twice) are programming errors reported as `Internal`.
struct Metrics {
    registry: Registry,
}

impl Metrics {
    fn add<M: prometheus::core::Collector + Clone + 'static>(&self, m: M) -> Result<M, Error> {
        self.registry
            .register(Box::new(m.clone()))
            .map_err(|e| Error::Internal(format!("metrics: {e}")))?;
        Ok(m)
    }

    fn gauge(&self, name: &str, help: &str, v: f64) -> Result<(), Error> {
        let g = Gauge::with_opts(Opts::new(name, help))
            .map_err(|e| Error::Internal(format!("metrics: {e}")))?;
        self.add(g)?.set(v);
        Ok(())
    }

    fn gauges<'l>(
        &self,
        name: &str,
        help: &str,
        label: &str,
        values: impl IntoIterator<Item = (&'l str, f64)>,
    ) -> Result<(), Error> {
        let g = GaugeVec::new(Opts::new(name, help), &[label])
            .map_err(|e| Error::Internal(format!("metrics: {e}")))?;
        let g = self.add(g)?;
        for (l, v) in values {
            g.with_label_values(&[l]).set(v);
        }
        Ok(())
    }

    fn counters<'l>(
        &self,
        name: &str,
        help: &str,
        label: &str,
        values: impl IntoIterator<Item = (&'l str, f64)>,
    ) -> Result<(), Error> {
        let c = CounterVec::new(Opts::new(name, help), &[label])
            .map_err(|e| Error::Internal(format!("metrics: {e}")))?;
        let c = self.add(c)?;
        for (l, v) in values {
            c.with_label_values(&[l]).inc_by(v);
        }
        Ok(())
    }

    fn text(&self) -> Result<String, Error> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(|e| Error::Internal(format!("metrics: {e}")))?;
        String::from_utf8(out).map_err(|e| Error::Internal(format!("metrics: {e}")))
    }
}

/// Renders the metrics. `previous` is the previous file's text, from which
/// the counters and the last success time are carried on.
pub fn render(input: &MetricsInput<'_>, previous: Option<&str>) -> Result<String, Error> {
    let prev = Previous::parse(previous.unwrap_or(""));
    let m = Metrics {
        registry: Registry::new(),
    };
    flow_metrics(&m, input, &prev)?;
    sync_metrics(&m, input)?;
    apply_metrics(&m, input)?;
    if let Some(r) = input.last_reconcile {
        reconcile_metrics(&m, r)?;
    }
    m.text()
}

/// The newest reconcile: when it ran, and what it found.
fn reconcile_metrics(m: &Metrics, r: &sync_state::ReconcileReport) -> Result<(), Error> {
    let t = r.finished_at.unwrap_or(r.started_at);
    m.gauge(
        "statbank_reconcile_last_timestamp_seconds",
        "When the database was last reconciled with the mirror (unix time).",
        t.get().timestamp() as f64,
    )?;
    let s = &r.summary;
    m.gauges(
        "statbank_reconcile_tables",
        "Tables of the last reconcile by what it found.",
        "status",
        [
            ("agrees", s.tables_agree as f64),
            ("differs", (s.tables_differ - s.tables_missing) as f64),
            ("missing_table", s.tables_missing as f64),
            ("repaired", s.tables_repaired as f64),
            ("failed", s.tables_failed as f64),
        ],
    )?;
    m.gauges(
        "statbank_reconcile_periods",
        "Periods the last reconcile found missing from, extra in, or differing in the database.",
        "kind",
        [
            ("missing_in_db", s.periods_missing_in_db as f64),
            ("extra_in_db", s.periods_extra_in_db as f64),
            ("differs", s.periods_differing as f64),
        ],
    )
}

fn flow_metrics(m: &Metrics, input: &MetricsInput<'_>, prev: &Previous) -> Result<(), Error> {
    let r = input.report;
    let runs = "statbank_flow_runs_total";
    m.counters(
        runs,
        "Flow runs by final status.",
        "status",
        STATUSES.iter().map(|s| {
            let add = f64::from(u8::from(*s == r.status));
            (s.as_str(), prev.counter(runs, s.as_str()) + add)
        }),
    )?;
    let skipped = "statbank_flow_gate_skipped_total";
    let by_gate = r.manifest.catalog.reason.as_deref() == Some("weekly_gate");
    m.counters(
        skipped,
        "Flow runs the weekly catalog gate skipped, by whether a schedule started them.",
        "scheduled",
        ["true", "false"].into_iter().map(|l| {
            let this = by_gate && (l == "true") == input.scheduled;
            (l, prev.counter(skipped, l) + f64::from(u8::from(this)))
        }),
    )?;
    m.gauges(
        "statbank_flow_last_status",
        "1 for the final status of the last run.",
        "status",
        STATUSES
            .iter()
            .map(|s| (s.as_str(), f64::from(u8::from(*s == r.status)))),
    )?;
    let now = input.now.timestamp() as f64;
    m.gauge(
        "statbank_flow_last_run_timestamp_seconds",
        "When the last run ended (unix time).",
        now,
    )?;
    let last_success = if r.status == RunStatus::Success {
        Some(now)
    } else {
        prev.last_success
            .or(input.last_success.map(|t| t.timestamp() as f64))
    };
    if let Some(t) = last_success {
        m.gauge(
            "statbank_flow_last_success_timestamp_seconds",
            "When the last run that ended success finished (unix time); skipped and partially failed runs do not count.",
            t,
        )?;
    }
    m.gauge(
        "statbank_sync_attempts",
        "Sync attempts of the last run (1 + retries).",
        f64::from(r.sync_attempts),
    )?;
    m.gauge(
        "statbank_sync_duration_seconds",
        "Wall time of the sync in the last run.",
        r.sync_seconds,
    )
}

fn sync_metrics(m: &Metrics, input: &MetricsInput<'_>) -> Result<(), Error> {
    let man = &input.report.manifest;
    let count = |st: TableStatus| man.tables.values().filter(|t| t.status == st).count() as f64;
    m.gauges(
        "statbank_sync_tables",
        "Tables of the last run by sync status.",
        "status",
        [
            ("synced", count(TableStatus::Synced)),
            ("skipped", count(TableStatus::Skipped)),
            ("failed", count(TableStatus::Failed)),
        ],
    )?;
    let s = &man.summary;
    for (name, help, v) in [
        (
            "statbank_sync_tables_changed",
            "Tables with changed periods in the last run.",
            s.tables_with_changed_tids as f64,
        ),
        (
            "statbank_sync_tables_schema_changed",
            "Tables whose variables changed upstream in the last run (re-fetched whole).",
            s.tables_schema_changed as f64,
        ),
        (
            "statbank_sync_rows_written",
            "Rows written to partitions in the last run.",
            s.rows_written as f64,
        ),
        (
            "statbank_sync_files_written",
            "Partition files written in the last run.",
            s.files_written as f64,
        ),
        (
            "statbank_sync_bytes_fetched",
            "Response body bytes received in the last run.",
            input.client.bytes as f64,
        ),
        (
            "statbank_sync_http_requests",
            "HTTP requests sent in the last run (retries included).",
            input.client.requests as f64,
        ),
        (
            "statbank_sync_http_retries",
            "HTTP retries in the last run.",
            input.client.retries as f64,
        ),
    ] {
        m.gauge(name, help, v)?;
    }
    match input.state {
        Some(state) => state_metrics(m, state),
        None => Ok(()),
    }
}

/// What `state.json` says across runs: the last catalog poll, the
/// verification debt, tables failing again and again.
fn state_metrics(m: &Metrics, state: &sync_state::SyncState) -> Result<(), Error> {
    if let Some(t) = state.last_catalog_poll_at {
        m.gauge(
            "statbank_sync_last_catalog_poll_timestamp_seconds",
            "When the catalog was last polled (unix time): no table can be fresher.",
            t.get().timestamp() as f64,
        )?;
    }
    m.gauge(
        "statbank_sync_verification_debt_periods",
        "Older periods that still owe a verification re-fetch, over all tables.",
        state
            .tables
            .values()
            .map(|t| t.verify_debt.len())
            .sum::<usize>() as f64,
    )?;
    let failing: Vec<(String, f64)> = state
        .tables
        .iter()
        .filter(|(_, t)| t.consecutive_failures > 0)
        .map(|(id, t)| (id.to_string(), f64::from(t.consecutive_failures)))
        .collect();
    m.gauges(
        "statbank_sync_table_consecutive_failures",
        "Runs in a row in which a table failed to sync (only failing tables).",
        "table",
        failing.iter().map(|(t, v)| (t.as_str(), *v)),
    )
}

fn apply_metrics(m: &Metrics, input: &MetricsInput<'_>) -> Result<(), Error> {
    let r = input.report;
    m.gauge(
        "statbank_apply_duration_seconds",
        "Wall time of the DB apply in the last run.",
        r.apply_seconds,
    )?;
    let tables = r.apply.as_ref().and_then(|a| a.tables.as_ref());
    let count = |st: ApplyStatus| {
        tables
            .map(|t| t.iter().filter(|x| x.status == st).count())
            .unwrap_or(0) as f64
    };
    m.gauges(
        "statbank_apply_tables",
        "Tables of the last DB apply by status.",
        "status",
        [
            ("applied", count(ApplyStatus::Applied)),
            ("skipped", count(ApplyStatus::Skipped)),
            ("failed", count(ApplyStatus::Failed)),
        ],
    )?;
    let inserted: u64 = tables
        .map(|t| t.iter().filter_map(|x| x.inserted_rows).sum())
        .unwrap_or(0);
    m.gauge(
        "statbank_apply_rows_inserted",
        "Rows inserted by the last DB apply.",
        inserted as f64,
    )?;
    m.gauge(
        "statbank_apply_attempts",
        "DB apply attempts of the last run.",
        f64::from(r.apply_attempts),
    )?;
    match input.pending_runs {
        Some(n) => m.gauge(
            "statbank_apply_pending_runs",
            "Runs whose changed periods still await a successful DB apply.",
            n as f64,
        ),
        None => Ok(()),
    }
}

/// Writes the metrics file (atomically, mode 0644) and pushes them, as
/// configured.
pub async fn write_metrics(
    file: Option<&Path>,
    push_url: Option<&str>,
    input: &MetricsInput<'_>,
) -> Result<(), Error> {
    let previous = file.and_then(|f| std::fs::read_to_string(f).ok());
    let text = render(input, previous.as_deref())?;
    if let Some(f) = file {
        sync_state::fsio::write_atomic(f, text.as_bytes())?;
    }
    if let Some(url) = push_url {
        push(url, text).await?;
    }
    Ok(())
}

async fn push(url: &str, text: String) -> Result<(), Error> {
    let shown = crate::redact::url_origin(url);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| Error::Internal(format!("metrics push client: {e}")))?;
    let resp = client
        .put(url)
        .header("content-type", prometheus::TEXT_FORMAT)
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previous_counters_and_last_success_are_read_back() {
        let text = "# HELP statbank_flow_runs_total Flow runs.\n\
                    # TYPE statbank_flow_runs_total counter\n\
                    statbank_flow_runs_total{status=\"success\"} 3\n\
                    statbank_flow_runs_total{status=\"failed\"} 1\n\
                    # TYPE statbank_flow_last_success_timestamp_seconds gauge\n\
                    statbank_flow_last_success_timestamp_seconds 1700000000\n";
        let p = Previous::parse(text);
        assert_eq!(p.counter("statbank_flow_runs_total", "success"), 3.0);
        assert_eq!(p.counter("statbank_flow_runs_total", "failed"), 1.0);
        assert_eq!(p.counter("statbank_flow_runs_total", "skipped"), 0.0);
        assert_eq!(p.last_success, Some(1_700_000_000.0));
        assert!(Previous::parse("not { metrics").counters.is_empty());
    }
}
