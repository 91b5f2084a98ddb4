//! `fact-apply` when Postgres misbehaves: the apply's connection is killed
//! while it waits for a lock, a lock is not granted within `lock_timeout`,
//! and the server cannot be reached. Each fault must roll its table back,
//! be reported as `failed` (in the returned report and in the manifest's
//! `db_apply`), leave the other tables to go on, and the next apply must
//! succeed with the right rows.
//!
//! Every test gets its own database from [`tests::pg::test_db`] (dropped at
//! the end), its own data folder and its own table names.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use fact_apply::{apply_run, ApplyOptions};
use sync_state::{ApplyStatus, DbApplyReport, RunId, RunStatus};
use tests::apply_fx::{fx, result, saved_table, Fx, Row};

/// How long a test waits for the apply before calling it hung.
const HANG: Duration = Duration::from_secs(60);

/// The BULK header of the fixtures' partitions (INDHOLD last).
const H: &[&str] = &["OMRÅDE", "TID", "INDHOLD"];

/// What only these tests need of the fixture.
trait FxExt {
    fn apply_client(&self, app: &str, options: Option<&str>) -> Result<postgres::Client>;
    fn create(&mut self, name: &str) -> Result<()>;
    fn part_omrade(&self, t: &str, period: &str, rows: &[(&str, f64)]) -> Result<()>;
    fn manifest_one(&self, run: &str, tables: &[&str], period: &str) -> Result<RunId>;
    fn saved(&self, run: &RunId) -> Result<serde_json::Value>;
    fn spawn_apply(
        &self,
        client: postgres::Client,
        run: &RunId,
    ) -> mpsc::Receiver<(Result<DbApplyReport, String>, postgres::Client)>;
}

impl FxExt for Fx {
    /// A connection for the apply, named `app` in `pg_stat_activity`, with
    /// extra server `options` (`-c lock_timeout=…`).
    fn apply_client(&self, app: &str, options: Option<&str>) -> Result<postgres::Client> {
        let mut cfg: postgres::Config = self.db.url().parse().context("test database url")?;
        cfg.application_name(app);
        if let Some(o) = options {
            cfg.options(o);
        }
        cfg.connect_timeout(Duration::from_secs(10));
        cfg.connect(postgres::NoTls)
            .with_context(|| format!("connecting the apply ({app})"))
    }

    /// Creates `fact.<name>` with rows for 2024K1 and 2024K2.
    fn create(&mut self, name: &str) -> Result<()> {
        self.client.batch_execute(&format!(
            "CREATE TABLE fact.{name} (omrade text, tid date, indhold double precision);
             CREATE INDEX ON fact.{name} (tid);
             INSERT INTO fact.{name} VALUES
               ('000','2024-01-01',1), ('101','2024-01-01',2),
               ('000','2024-04-01',3), ('101','2024-04-01',4);"
        ))?;
        Ok(())
    }

    /// Writes partition `t`/`period` with `(omrade, indhold)` rows.
    fn part_omrade(&self, t: &str, period: &str, rows: &[(&str, f64)]) -> Result<()> {
        let codes: Vec<[&str; 2]> = rows.iter().map(|(o, _)| [*o, period]).collect();
        let rows: Vec<Row<'_>> = codes
            .iter()
            .zip(rows)
            .map(|(c, (_, v))| (&c[..], Some(*v)))
            .collect();
        self.part(t, period, H, &rows)
    }

    /// Writes manifest `run` in which every table in `tables` changed
    /// `period`.
    fn manifest_one(&self, run: &str, tables: &[&str], period: &str) -> Result<RunId> {
        let periods = [period];
        let changes: Vec<(&str, &[&str], &[&str])> =
            tables.iter().map(|t| (*t, &periods[..], &[][..])).collect();
        self.manifest(run, &changes)
    }

    /// The `db_apply` section as saved in the manifest.
    fn saved(&self, run: &RunId) -> Result<serde_json::Value> {
        self.saved_db_apply(run)?
            .context("no db_apply in the manifest")
    }

    /// Runs `apply_run` on `client` in its own thread; the receiver gets the
    /// result (as text on error) and the client back.
    fn spawn_apply(
        &self,
        mut client: postgres::Client,
        run: &RunId,
    ) -> mpsc::Receiver<(Result<DbApplyReport, String>, postgres::Client)> {
        let (send, recv) = mpsc::channel();
        let data = self.data.clone();
        let run = run.clone();
        std::thread::spawn(move || {
            let r = apply_run(&mut client, &data, &run, &ApplyOptions::default())
                .map_err(|e| fact_apply::error_chain(&e));
            let _ = send.send((r, client));
        });
        recv
    }
}

/// Whether `e` is the error of a connection the server terminated: the
/// client reports the server's FATAL message when it reads it before the
/// end of the stream, else just `connection closed` (timing decides).
fn is_lost_connection(e: &str) -> bool {
    e.contains("terminating connection due to administrator command")
        || e.ends_with("connection closed")
}

/// Waits until the backend named `app` waits on a lock; returns its pid and
/// the statement it waits in.
fn wait_for_lock_wait(monitor: &mut postgres::Client, app: &str) -> Result<(i32, String)> {
    let t0 = Instant::now();
    loop {
        let row = monitor.query_opt(
            "SELECT pid, query FROM pg_stat_activity \
             WHERE application_name = $1 AND wait_event_type = 'Lock'",
            &[&app],
        )?;
        if let Some(row) = row {
            return Ok((row.get(0), row.get(1)));
        }
        if t0.elapsed() > HANG {
            bail!("the apply ({app}) never waited on the lock");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The apply's backend is terminated (`pg_terminate_backend`: what a server
/// restart, a failover or an idle-session killer does to a session) while it
/// waits for the lock of the second of three tables.
#[test]
fn a_connection_killed_mid_apply_rolls_its_table_back_and_the_rerun_applies() -> Result<()> {
    let mut f = fx()?;
    // applied in id order: DROPA, then DROPK (killed), then DROPZ
    for t in ["dropa", "dropk", "dropz"] {
        f.create(t)?;
    }
    let new_rows = [("000", 30.0), ("101", 40.0), ("202", 50.0)];
    for t in ["DROPA", "DROPK", "DROPZ"] {
        f.part_omrade(t, "2024K2", &new_rows)?;
    }
    let run = f.manifest_one("r1", &["DROPA", "DROPK", "DROPZ"], "2024K2")?;
    let before = f.dump("dropk")?;
    assert_eq!(f.dump("dropz")?, before);
    let expected_after = vec![
        "(000,2024-01-01,1)",
        "(000,2024-04-01,30)",
        "(101,2024-01-01,2)",
        "(101,2024-04-01,40)",
        "(202,2024-04-01,50)",
    ];

    // Another session holds the table so that the apply blocks on it.
    let mut locker = f.db.client()?;
    let mut lock = locker.transaction()?;
    lock.batch_execute("LOCK TABLE fact.dropk IN ACCESS EXCLUSIVE MODE")?;

    let app = format!("pg-faults-kill-{}", std::process::id());
    let apply = f.spawn_apply(f.apply_client(&app, None)?, &run);
    let mut monitor = f.db.client()?;
    let (pid, query) = wait_for_lock_wait(&mut monitor, &app)?;
    // The apply locks its target first thing in the table's transaction
    // (SHARE ROW EXCLUSIVE), so that is where it waits, before its DELETE.
    assert!(
        query.contains("LOCK TABLE") && query.contains("dropk"),
        "the apply waits in {query:?}"
    );
    let killed: bool = monitor
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])?
        .get(0);
    assert!(killed, "pg_terminate_backend({pid})");
    lock.rollback()?;

    let (outcome, _dead) = apply
        .recv_timeout(HANG)
        .context("apply_run did not return after its connection was killed")?;
    // apply_run itself returns Ok: the lost connection is a failure of the
    // table it hit and of every table after it (the apply does not
    // reconnect), and the report is written to the manifest.
    let report = outcome.map_err(anyhow::Error::msg)?;
    assert_eq!(report.status, RunStatus::PartialFailure);
    assert_eq!(
        (
            report.summary.tables_total,
            report.summary.tables_applied,
            report.summary.tables_failed
        ),
        (3, 1, 2)
    );
    assert_eq!(result(&report, "DROPA").status, ApplyStatus::Applied);
    let k = result(&report, "DROPK");
    assert_eq!(k.status, ApplyStatus::Failed, "{k:?}");
    let ek = k.error.clone().unwrap_or_default();
    assert!(
        ek.contains("table DROPK: locking the target failed") && is_lost_connection(&ek),
        "{ek}"
    );
    assert!(
        k.inserted_rows.is_none() && k.deleted_rows.is_none(),
        "{k:?}"
    );
    let z = result(&report, "DROPZ");
    assert_eq!(z.status, ApplyStatus::Failed, "{z:?}");
    let ez = z.error.clone().unwrap_or_default();
    assert!(
        ez.contains("table DROPZ: looking up the target table failed")
            && ez.contains("connection closed"),
        "{ez}"
    );

    let saved = f.saved(&run)?;
    assert_eq!(saved["status"], "partial_failure");
    assert_eq!(saved["summary"]["tables_failed"], 2);
    assert_eq!(saved_table(&saved, "DROPA")["status"], "applied");
    for (t, e) in [("DROPK", &ek), ("DROPZ", &ez)] {
        assert_eq!(saved_table(&saved, t)["status"], "failed");
        assert_eq!(saved_table(&saved, t)["error"].as_str(), Some(e.as_str()));
    }

    // rolled back: exactly the rows it had; the one before is applied
    assert_eq!(f.dump("dropk")?, before);
    assert_eq!(f.dump("dropz")?, before);
    assert_eq!(f.dump("dropa")?, expected_after);

    // a fresh connection applies the same run
    let mut fresh = f.apply_client(&format!("{app}-rerun"), None)?;
    let report = apply_run(&mut fresh, &f.data, &run, &ApplyOptions::default())?;
    assert_eq!(report.status, RunStatus::Success, "{report:?}");
    assert_eq!(report.summary.tables_applied, 3);
    let k = result(&report, "DROPK");
    assert_eq!((k.deleted_rows, k.inserted_rows), (Some(2), Some(3)));
    for t in ["dropa", "dropk", "dropz"] {
        assert_eq!(f.dump(t)?, expected_after, "{t}");
    }
    assert_eq!(f.saved(&run)?["status"], "success");
    Ok(())
}

/// Like the test above, but the kill comes later in the table's
/// transaction: another session holds row locks (`SELECT … FOR UPDATE`) on
/// the changed period, which do not conflict with the apply's table lock, so
/// the apply creates its temp table, copies the partition into it and then
/// blocks in its `DELETE`; the backend is terminated there.
#[test]
fn a_connection_killed_in_its_delete_rolls_the_table_back() -> Result<()> {
    let mut f = fx()?;
    for t in ["rowa", "rowk"] {
        f.create(t)?;
    }
    let new_rows = [("000", 11.0), ("404", 12.0)];
    f.part_omrade("ROWA", "2024K2", &new_rows)?;
    f.part_omrade("ROWK", "2024K2", &new_rows)?;
    let run = f.manifest_one("r1", &["ROWA", "ROWK"], "2024K2")?;
    let before = f.dump("rowk")?;
    let expected_after = vec![
        "(000,2024-01-01,1)",
        "(000,2024-04-01,11)",
        "(101,2024-01-01,2)",
        "(404,2024-04-01,12)",
    ];

    let mut locker = f.db.client()?;
    let mut lock = locker.transaction()?;
    let locked = lock.query(
        "SELECT * FROM fact.rowk WHERE tid = '2024-04-01' FOR UPDATE",
        &[],
    )?;
    assert_eq!(locked.len(), 2);

    let app = format!("pg-faults-delete-{}", std::process::id());
    let apply = f.spawn_apply(f.apply_client(&app, None)?, &run);
    let mut monitor = f.db.client()?;
    let (pid, query) = wait_for_lock_wait(&mut monitor, &app)?;
    assert!(
        query.contains("DELETE FROM") && query.contains("rowk"),
        "the apply waits in {query:?}"
    );
    let killed: bool = monitor
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])?
        .get(0);
    assert!(killed, "pg_terminate_backend({pid})");
    lock.rollback()?;

    let (outcome, _dead) = apply
        .recv_timeout(HANG)
        .context("apply_run did not return after its connection was killed")?;
    let report = outcome.map_err(anyhow::Error::msg)?;
    assert_eq!(report.status, RunStatus::PartialFailure);
    assert_eq!(result(&report, "ROWA").status, ApplyStatus::Applied);
    let k = result(&report, "ROWK");
    assert_eq!(k.status, ApplyStatus::Failed, "{k:?}");
    let e = k.error.clone().unwrap_or_default();
    assert!(
        e.contains("table ROWK: delete of changed periods failed") && is_lost_connection(&e),
        "{e}"
    );
    let saved = f.saved(&run)?;
    assert_eq!(saved_table(&saved, "ROWK")["status"], "failed");
    assert_eq!(
        saved_table(&saved, "ROWK")["error"].as_str(),
        Some(e.as_str())
    );

    assert_eq!(f.dump("rowk")?, before);
    assert_eq!(f.dump("rowa")?, expected_after);
    let mut fresh = f.apply_client(&format!("{app}-rerun"), None)?;
    let report = apply_run(&mut fresh, &f.data, &run, &ApplyOptions::default())?;
    assert_eq!(report.status, RunStatus::Success, "{report:?}");
    assert_eq!(f.dump("rowk")?, expected_after);
    assert_eq!(f.dump("rowa")?, expected_after);
    Ok(())
}

/// The apply's connection is lost (terminated while idle) before the apply
/// starts, as when the server restarts between runs on a pooled connection:
/// every table fails on its first statement, fast, and is reported; nothing
/// is written; a new connection applies the run.
#[test]
fn a_connection_lost_before_the_apply_fails_every_table_and_changes_nothing() -> Result<()> {
    let mut f = fx()?;
    for t in ["lost1", "lost2"] {
        f.create(t)?;
        f.part_omrade(&t.to_uppercase(), "2024K2", &[("000", 9.0)])?;
    }
    let run = f.manifest_one("r1", &["LOST1", "LOST2"], "2024K2")?;
    let before = f.dump("lost1")?;

    let app = format!("pg-faults-lost-{}", std::process::id());
    let mut client = f.apply_client(&app, None)?;
    let killed: bool = f
        .client
        .query_one(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )?
        .get(0);
    assert!(killed);
    // wait until the server has ended the session
    let t0 = Instant::now();
    while f
        .client
        .query_opt(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )?
        .is_some()
    {
        assert!(t0.elapsed() < HANG, "the backend did not go away");
        std::thread::sleep(Duration::from_millis(20));
    }

    let t0 = Instant::now();
    let report = apply_run(&mut client, &f.data, &run, &ApplyOptions::default())?;
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert_eq!(report.status, RunStatus::PartialFailure);
    assert_eq!(report.summary.tables_failed, 2);
    for t in ["LOST1", "LOST2"] {
        let r = result(&report, t);
        assert_eq!(r.status, ApplyStatus::Failed, "{r:?}");
        let e = r.error.clone().unwrap_or_default();
        assert!(
            e.contains(&format!("table {t}: looking up the target table failed"))
                && is_lost_connection(&e),
            "{e}"
        );
    }
    assert_eq!(f.saved(&run)?["summary"]["tables_failed"], 2);
    assert_eq!(f.dump("lost1")?, before);

    let mut fresh = f.apply_client(&format!("{app}-rerun"), None)?;
    let report = apply_run(&mut fresh, &f.data, &run, &ApplyOptions::default())?;
    assert_eq!(report.status, RunStatus::Success, "{report:?}");
    assert_eq!(
        f.dump("lost1")?,
        vec![
            "(000,2024-01-01,1)",
            "(000,2024-04-01,9)",
            "(101,2024-01-01,2)"
        ]
    );
    Ok(())
}

/// A table that stays locked beyond the session's `lock_timeout` fails
/// (rolled back) while the other table of the run is applied; once the
/// lock is gone the same connection applies the run.
#[test]
fn a_lock_timeout_fails_only_the_locked_table() -> Result<()> {
    let mut f = fx()?;
    for t in ["tlocked", "tfree"] {
        f.create(t)?;
    }
    let new_rows = [("000", 7.0), ("303", 8.0)];
    f.part_omrade("TLOCKED", "2024K2", &new_rows)?;
    f.part_omrade("TFREE", "2024K2", &new_rows)?;
    let run = f.manifest_one("r1", &["TFREE", "TLOCKED"], "2024K2")?;
    let before = f.dump("tlocked")?;
    let expected_after = vec![
        "(000,2024-01-01,1)",
        "(000,2024-04-01,7)",
        "(101,2024-01-01,2)",
        "(303,2024-04-01,8)",
    ];

    let mut locker = f.db.client()?;
    let mut lock = locker.transaction()?;
    lock.batch_execute("LOCK TABLE fact.tlocked IN ACCESS EXCLUSIVE MODE")?;

    let app = format!("pg-faults-timeout-{}", std::process::id());
    let client = f.apply_client(&app, Some("-c lock_timeout=500"))?;
    let t0 = Instant::now();
    let (outcome, mut client) = f
        .spawn_apply(client, &run)
        .recv_timeout(HANG)
        .context("apply_run did not return although lock_timeout is 500 ms")?;
    let took = t0.elapsed();
    let report = outcome.map_err(anyhow::Error::msg)?;
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");

    assert_eq!(report.status, RunStatus::PartialFailure);
    assert_eq!(
        (report.summary.tables_applied, report.summary.tables_failed),
        (1, 1)
    );
    assert_eq!(result(&report, "TFREE").status, ApplyStatus::Applied);
    let r = result(&report, "TLOCKED");
    assert_eq!(r.status, ApplyStatus::Failed, "{r:?}");
    let e = r.error.clone().unwrap_or_default();
    assert!(
        e.contains("table TLOCKED: locking the target failed")
            && e.contains("canceling statement due to lock timeout"),
        "{e}"
    );
    let saved = f.saved(&run)?;
    assert_eq!(saved["status"], "partial_failure");
    assert_eq!(saved_table(&saved, "TLOCKED")["status"], "failed");
    assert!(saved_table(&saved, "TLOCKED")["error"]
        .as_str()
        .is_some_and(|s| s.contains("lock timeout")));
    assert_eq!(saved_table(&saved, "TFREE")["status"], "applied");

    // the locked table is unchanged (read inside the lock holder's
    // transaction: nobody else can read it now)
    let inside: Vec<String> = lock
        .query(
            "SELECT x::text COLLATE \"C\" AS r FROM fact.tlocked x ORDER BY r",
            &[],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(inside, before);
    lock.commit()?;
    assert_eq!(f.dump("tlocked")?, before);
    assert_eq!(f.dump("tfree")?, expected_after);

    // the same connection is still usable and applies the run
    let report = apply_run(&mut client, &f.data, &run, &ApplyOptions::default())?;
    assert_eq!(report.status, RunStatus::Success, "{report:?}");
    let r = result(&report, "TLOCKED");
    assert_eq!((r.deleted_rows, r.inserted_rows), (Some(2), Some(2)));
    assert_eq!(f.dump("tlocked")?, expected_after);
    assert_eq!(f.dump("tfree")?, expected_after);
    assert_eq!(f.saved(&run)?["status"], "success");
    Ok(())
}

/// A server that cannot be reached is a clear connect error, quickly.
///
/// Stopping the server itself is not possible here (the CI database is
/// shared by every test), so a port nothing listens on stands in for "the
/// server stopped"; a server that goes away during an apply is covered by
/// the killed-connection tests above.
#[test]
fn an_unreachable_server_is_a_clear_connect_error() {
    let url = "postgres://postgres@127.0.0.1:1/test";
    let mut cfg: postgres::Config = url.parse().expect("valid url");
    cfg.connect_timeout(Duration::from_secs(10));
    let t0 = Instant::now();
    let err = match cfg.connect(postgres::NoTls) {
        Ok(_) => panic!("something accepted a Postgres connection on 127.0.0.1:1"),
        Err(e) => e,
    };
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    let msg = fact_apply::error_chain(&err);
    assert!(msg.contains("error connecting to server"), "{msg}");
    assert!(msg.to_lowercase().contains("connection refused"), "{msg}");
    assert!(!err.is_closed(), "{msg}");
}
