//! The set-up of an end-to-end test: an emulator serving a world, a data
//! folder, a database of its own, and the sync and apply steps over them.

use bins::{run_sync_cycle, SyncOptions};
use fact_apply::{apply_run, ApplyOptions};
use statbank_client::emulator::{Emulator, World};
use sync_state::{DataDir, DbApplyReport, RunId, RunManifest, RunStatus};

use crate::sync::{at_hours, fast_client, options};

/// An emulator, a data folder and a database, for one test.
pub struct Setup {
    /// The runtime the emulator and the cycles run on.
    pub rt: tokio::runtime::Runtime,
    /// The emulator.
    pub emu: Emulator,
    /// The data folder's owner (removed with the set-up).
    pub tmp: tempfile::TempDir,
    /// The test's database (dropped with the set-up).
    pub db: crate::pg::TestDb,
    /// A connection to it.
    pub pg: postgres::Client,
}

impl Setup {
    /// Starts the emulator on `world` and creates the database.
    pub fn new(world: World) -> Setup {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let emu = rt.block_on(Emulator::start(world)).expect("emulator");
        let db = crate::pg::test_db().expect("postgres");
        let pg = db.client().expect("client");
        Setup {
            rt,
            emu,
            tmp: tempfile::tempdir().expect("tmp"),
            db,
            pg,
        }
    }

    /// The data folder.
    pub fn data(&self) -> DataDir {
        DataDir::local(self.tmp.path())
    }

    /// Sync options at `hours` after the tests' start, the gate forced.
    pub fn opts(&self, hours: i64) -> SyncOptions {
        options(self.tmp.path(), at_hours(hours), true)
    }

    /// One cycle with `o`; it must not fail as a whole.
    pub fn sync_with(&self, o: &SyncOptions) -> RunManifest {
        let client = fast_client(&self.emu.base_url(), 0);
        let m = self.rt.block_on(run_sync_cycle(&client, o)).expect("cycle");
        assert_ne!(m.status, RunStatus::Failed, "{:?}", m.error);
        m
    }

    /// One cycle at `hours`, the gate forced.
    pub fn sync(&self, hours: i64) -> RunManifest {
        self.sync_with(&self.opts(hours))
    }

    /// Applies `run` with `opts`.
    pub fn apply(&mut self, run: &RunId, opts: &ApplyOptions) -> DbApplyReport {
        let data = self.data();
        apply_run(&mut self.pg, &data, run, opts).expect("apply")
    }

    /// The one `bigint` a query returns.
    pub fn count(&mut self, sql: &str) -> i64 {
        self.pg.query_one(sql, &[]).expect(sql).get(0)
    }
}

/// Apply options that create missing fact tables.
pub fn create() -> ApplyOptions {
    ApplyOptions {
        create_missing: true,
        ..ApplyOptions::default()
    }
}
