//! The binaries as a scheduler or an operator sees them: exit statuses, the
//! last line, JSON logs, and secrets kept out of every output. The children
//! run exactly the binaries' code (`bins::app::*::main`): this test binary
//! re-executes itself with `STATBANK_CLI_CHILD` set (harness = false).

use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::{ensure, Context, Result};
use statbank_client::emulator::{EmuTable, Emulator, Endpoint, Fault, FaultKind, World};

const CHILD_ENV: &str = "STATBANK_CLI_CHILD";
const SECRET: &str = "S3cretPw0rd";

type Case = (&'static str, fn() -> Result<()>);

fn main() -> ExitCode {
    let argv = std::env::args_os().skip(1);
    match std::env::var(CHILD_ENV).as_deref() {
        Ok("statbank-sync") => return bins::app::sync::main(argv),
        Ok("statbank-apply") => return bins::app::apply::main(argv),
        Ok("statbank-flow") => return bins::app::flow::main(argv),
        Ok("statbank-inspect") => return bins::app::inspect::main(argv),
        _ => {}
    }
    let tests: [Case; 8] = [
        (
            "apply_on_a_fresh_database_points_to_create_missing",
            apply_on_a_fresh_database,
        ),
        (
            "an_operators_flow_alert_is_chat_ready_and_keeps_its_secrets",
            operators_flow_alert,
        ),
        (
            "sigterm_mid_run_leaves_a_state_the_next_run_completes",
            sigterm_mid_run,
        ),
        (
            "sync_exit_statuses_and_json_logs",
            sync_exit_statuses_and_json_logs,
        ),
        (
            "passwords_never_appear_in_any_output",
            passwords_never_appear_in_any_output,
        ),
        (
            "apply_without_runs_is_a_clear_error",
            apply_without_runs_is_a_clear_error,
        ),
        ("flow_and_inspect_last_lines", flow_and_inspect_last_lines),
        (
            "upstream_text_is_plain_text_in_alerts_and_on_terminals",
            upstream_text_is_plain_text,
        ),
    ];
    let mut failed = 0;
    for (name, t) in tests {
        match t() {
            Ok(()) => println!("test {name} ... ok"),
            Err(e) => {
                failed += 1;
                println!("test {name} ... FAILED\n  {e:#}");
            }
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Out> {
    run_in(None, bin, args, env)
}

/// Runs `bin` in the folder `cwd` (default: this process's).
fn run_in(cwd: Option<&Path>, bin: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Out> {
    let mut cmd = Command::new(std::env::current_exe()?);
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    cmd.env(CHILD_ENV, bin)
        .env_remove("DATABASE_URL")
        .env_remove("STATBANK_DATA_DIR")
        .env_remove("STATBANK_BASE_URL")
        .env("RUST_LOG", "info")
        .arg(bin)
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().with_context(|| format!("running {bin}"))?;
    Ok(Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn world() -> World {
    let mut w = World::new();
    w.insert(EmuTable::synthetic("AAA", &["2022", "2023"], &[("X", 3)]));
    w.insert(EmuTable::synthetic(
        "BBB",
        &["2022K1", "2022K2"],
        &[("Y", 2)],
    ));
    w
}

fn with_emulator<T>(f: impl FnOnce(&Emulator) -> Result<T>) -> Result<T> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let emu = rt.block_on(Emulator::start(world()))?;
    let r = f(&emu);
    rt.block_on(emu.shutdown());
    r
}

fn sync_args<'a>(dir: &'a str, base: &'a str) -> Vec<&'a str> {
    vec![
        "--data-dir",
        dir,
        "--base-url",
        base,
        "--force-catalog-poll",
        "--min-interval-ms",
        "0",
        "--max-retries",
        "0",
    ]
}

fn sync_exit_statuses_and_json_logs() -> Result<()> {
    with_emulator(|emu| {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().display().to_string();
        let base = emu.base_url();
        let mut args = sync_args(&dir, &base);
        args.extend(["--log-format", "json"]);
        let out = run("statbank-sync", &args, &[])?;
        ensure!(out.code == Some(0), "success exits 0: {}", out.stderr);
        ensure!(out.stdout.contains(": success in "), "{}", out.stdout);
        ensure!(out
            .stdout
            .lines()
            .last()
            .unwrap_or("")
            .contains("manifest:"));
        for line in out.stderr.lines().filter(|l| !l.trim().is_empty()) {
            serde_json::from_str::<serde_json::Value>(line)
                .with_context(|| format!("--log-format json gives JSON lines, got {line:?}"))?;
        }
        // Weekly gate: skipped, still 0.
        let out = run(
            "statbank-sync",
            &["--data-dir", &dir, "--base-url", &base],
            &[],
        )?;
        ensure!(
            out.code == Some(0) && out.stdout.contains("skipped"),
            "{}",
            out.stdout
        );
        // One table failing: partial_failure exits 2.
        emu.handle().set_updated("AAA", "2026-05-01T08:00:00");
        emu.handle()
            .add_fault(Fault::always(Endpoint::TableInfo, FaultKind::Status500).for_table("AAA"));
        let out = run("statbank-sync", &sync_args(&dir, &base), &[])?;
        ensure!(
            out.code == Some(2),
            "partial failure exits 2: {:?} {}",
            out.code,
            out.stdout
        );
        ensure!(out.stdout.contains("FAILED AAA"), "{}", out.stdout);
        // Catalog down: failed exits 1, and the manifest is still written.
        emu.handle()
            .add_fault(Fault::always(Endpoint::Tables, FaultKind::Status500));
        let out = run("statbank-sync", &sync_args(&dir, &base), &[])?;
        ensure!(out.code == Some(1), "failed exits 1: {:?}", out.code);
        ensure!(out.stdout.contains(": failed in "), "{}", out.stdout);
        emu.handle().clear_faults();
        // Env fallbacks work like the flags.
        let out = run(
            "statbank-sync",
            &["--force-catalog-poll", "--min-interval-ms", "0"],
            &[("STATBANK_DATA_DIR", &dir), ("STATBANK_BASE_URL", &base)],
        )?;
        ensure!(out.code == Some(0), "env fallbacks: {}", out.stderr);
        // A held lock: refused with a clear error, exit 1.
        let data = sync_state::DataDir::local(&dir);
        let _lock = sync_state::DataDirLock::acquire(data.storage(), &data.lock_key(), "test")?;
        let out = run("statbank-sync", &sync_args(&dir, &base), &[])?;
        ensure!(out.code == Some(1), "locked exits 1");
        ensure!(out.stderr.contains("lock"), "{}", out.stderr);
        Ok(())
    })
}

fn passwords_never_appear_in_any_output() -> Result<()> {
    with_emulator(|emu| {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().display().to_string();
        let base = emu.base_url();
        // A reachable server with a database that does not exist, and a
        // closed port: both fail, neither may print the password.
        let bad_db = format!("postgres://postgres:{SECRET}@127.0.0.1:5432/no_such_db_statbank");
        let closed = format!("postgres://postgres:{SECRET}@127.0.0.1:1/test");
        let metrics = tmp.path().join("m.prom").display().to_string();
        let mut args = sync_args(&dir, &base);
        args.extend([
            "--metrics-file",
            &metrics,
            "--apply-retry-delays",
            "0",
            "--log-format",
            "json",
        ]);
        let out = run("statbank-flow", &args, &[("DATABASE_URL", &bad_db)])?;
        ensure!(
            out.code == Some(2),
            "apply failure after a good sync: {:?}\n{}",
            out.code,
            out.stdout
        );
        check_clean(&out, tmp.path())?;
        ensure!(out.stdout.contains("apply: failed"), "{}", out.stdout);
        // Every form libpq reads a password in: URL userinfo (an unencoded
        // `/` in it), the `password` query parameter, key/value pairs with
        // spaces or tabs around `=`, quoted and backslash-escaped values.
        let forms = [
            bad_db.clone(),
            closed.clone(),
            format!("postgresql://postgres@127.0.0.1:1/test?password={SECRET}"),
            format!("postgres://postgres:{SECRET}/x@127.0.0.1:1/test"),
            format!("host=127.0.0.1 port=1 password = {SECRET} dbname=test"),
            format!("host=127.0.0.1\tport=1\tpassword\t=\t{SECRET}\tdbname=test"),
            format!("host=127.0.0.1 port=1 password='{SECRET} x' dbname=test"),
            format!("host=127.0.0.1 port=1 password={SECRET}\\ x dbname=test"),
            format!("host=127.0.0.1 port=1 password='{SECRET}"),
        ];
        let hook = receiver()?;
        let webhook = format!("{}/services/T0/B0/tok", hook.url_base);
        let mut alerting = args.clone();
        alerting.extend(["--alert-webhook", &webhook]);
        for url in &forms {
            let out = run("statbank-flow", &alerting, &[("DATABASE_URL", url)])?;
            ensure!(
                out.code == Some(2),
                "{url:?}: {:?}\n{}",
                out.code,
                out.stderr
            );
            check_clean(&out, tmp.path())?;
        }
        let bodies = hook.got.lock().expect("lock").clone();
        ensure!(
            bodies.len() == forms.len(),
            "one alert per failed apply: {bodies:?}"
        );
        for b in &bodies {
            ensure!(
                !b.to_string().contains(SECRET),
                "password in the alert: {b}"
            );
        }
        for url in &forms {
            let out = run(
                "statbank-apply",
                &["--data-dir", &dir, "--database-url", url],
                &[],
            )?;
            ensure!(out.code == Some(1), "{:?} {}", out.code, out.stderr);
            ensure!(
                out.stderr.contains("127.0.0.1") || out.stderr.contains("does not parse"),
                "the error names the server: {}",
                out.stderr
            );
            check_clean(&out, tmp.path())?;
            let out = run(
                "statbank-apply",
                &["--data-dir", &dir],
                &[("DATABASE_URL", url)],
            )?;
            ensure!(out.code == Some(1));
            check_clean(&out, tmp.path())?;
        }
        Ok(())
    })
}

/// The secret is in no output and no file under `dir`.
fn check_clean(out: &Out, dir: &Path) -> Result<()> {
    ensure!(
        !out.stdout.contains(SECRET),
        "password in stdout:\n{}",
        out.stdout
    );
    ensure!(
        !out.stderr.contains(SECRET),
        "password in stderr:\n{}",
        out.stderr
    );
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(text) = std::fs::read(&p) {
                ensure!(
                    !String::from_utf8_lossy(&text).contains(SECRET),
                    "password in {}",
                    p.display()
                );
            }
        }
    }
    Ok(())
}

fn apply_without_runs_is_a_clear_error() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().display().to_string();
    let out = run(
        "statbank-apply",
        &[
            "--data-dir",
            &dir,
            "--database-url",
            "postgres://postgres@127.0.0.1:1/x",
        ],
        &[],
    )?;
    ensure!(out.code == Some(1));
    ensure!(out.stderr.contains("no run manifest in"), "{}", out.stderr);
    let out = run("statbank-apply", &["--data-dir", &dir], &[])?;
    ensure!(
        out.code == Some(2) || out.code == Some(1),
        "missing DATABASE_URL is a usage error"
    );
    ensure!(out.stderr.contains("--database-url"), "{}", out.stderr);
    Ok(())
}

fn flow_and_inspect_last_lines() -> Result<()> {
    with_emulator(|emu| {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().display().to_string();
        let base = emu.base_url();
        let out = run("statbank-flow", &sync_args(&dir, &base), &[])?;
        ensure!(out.code == Some(0), "{}", out.stderr);
        let last = out.stdout.lines().last().unwrap_or("");
        ensure!(
            last.starts_with("flow ") && last.ends_with(": success"),
            "{last}"
        );
        ensure!(
            out.stdout.contains("DB apply was NOT run"),
            "{}",
            out.stdout
        );
        let log_last = out.stderr.lines().last().unwrap_or("");
        ensure!(log_last.contains("flow finished: success"), "{log_last}");
        let out = run("statbank-inspect", &["--data-dir", &dir, "status"], &[])?;
        ensure!(out.code == Some(0), "{}", out.stderr);
        ensure!(
            out.stdout.contains("tables in state.json: 2"),
            "{}",
            out.stdout
        );
        let out = run(
            "statbank-inspect",
            &["--data-dir", &dir, "table", "AAA"],
            &[],
        )?;
        ensure!(out.stdout.contains("local periods: 2"), "{}", out.stdout);
        Ok(())
    })
}

fn sigterm_mid_run() -> Result<()> {
    with_emulator(|emu| {
        // A table whose body streams for ~2 s, then two quick ones.
        emu.handle().add_table(EmuTable::synthetic(
            "AAASLOW",
            &["2021", "2022", "2023"],
            &[("X", 40), ("Y", 30)],
        ));
        let reference = tempfile::tempdir()?;
        let rdir = reference.path().display().to_string();
        let base = emu.base_url();
        // One fixed clock for both runs: partitions record when they were
        // published, and the two runs must write the same bytes.
        let now = [(sync_state::crash::FIXED_NOW_ENV, "2026-01-05T22:00:00Z")];
        let out = run("statbank-sync", &sync_args(&rdir, &base), &now)?;
        ensure!(out.code == Some(0), "{}", out.stderr);
        let expected = tests::sync::snapshot(reference.path());

        emu.handle().add_fault(
            Fault::always(
                Endpoint::Data,
                FaultKind::SlowBody {
                    bytes_per_sec: 20_000,
                },
            )
            .for_table("AAASLOW"),
        );
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().display().to_string();
        let mut args = sync_args(&dir, &base);
        args.extend(["--table-concurrency", "1"]);
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.env(CHILD_ENV, "statbank-sync")
            .env(now[0].0, now[0].1)
            .env("RUST_LOG", "info")
            .arg("statbank-sync")
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let child = cmd.spawn()?;
        std::thread::sleep(std::time::Duration::from_millis(700));
        let st = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        ensure!(st.success(), "kill -TERM");
        let out = child.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(2),
            "interrupted run is a partial failure: {:?}\n{stdout}\n{stderr}",
            out.status
        );
        ensure!(stderr.contains("stop requested"), "{stderr}");
        ensure!(
            stdout.contains("interrupted"),
            "the manifest says which tables were interrupted: {stdout}"
        );
        // Consistent: state and manifest parse, no temp files, and every
        // partition on disk is complete.
        let data = sync_state::DataDir::local(&dir);
        sync_state::SyncState::load(&data)?;
        let last = sync_state::latest_run(&data)?.context("a manifest was written")?;
        sync_state::RunManifest::load(&data, &last)?;
        ensure!(tests::sync::temp_files(tmp.path()).is_empty());
        for (name, bytes) in tests::sync::snapshot(tmp.path()) {
            ensure!(
                expected.get(&name) == Some(&bytes),
                "{name} is not complete"
            );
        }
        // The next run completes the work.
        emu.handle().clear_faults();
        let out = run("statbank-sync", &sync_args(&dir, &base), &[])?;
        ensure!(out.code == Some(0), "{}", out.stdout);
        ensure!(
            tests::sync::snapshot(tmp.path()) == expected,
            "converged to the uninterrupted result"
        );
        Ok(())
    })
}

/// A webhook receiver on loopback (its own runtime) recording JSON bodies.
struct Receiver {
    url_base: String,
    got: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    _rt: tokio::runtime::Runtime,
}

fn receiver() -> Result<Receiver> {
    use axum::routing::post;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let got: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>> = Default::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/services/{a}/{b}/{token}",
        post(move |axum::Json(v): axum::Json<serde_json::Value>| {
            let g = g.clone();
            async move {
                g.lock().expect("lock").push(v);
                "ok"
            }
        }),
    );
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    rt.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Receiver {
        url_base: format!("http://{addr}"),
        got,
        _rt: rt,
    })
}

/// As an operator runs it: a relative `--metrics-file`, a Slack-style
/// webhook whose path holds the token, and an apply that fails (the
/// database is down). The metrics file is written where asked, readable by
/// others (0644), with the pending apply; the alert has `text` naming the
/// run, host, manifest and time; the token is in no output and no file.
/// An API error message made to look like chat markup, alert lines and
/// terminal escapes reaches the alert as plain text, and stdout and stderr
/// without its control bytes.
fn upstream_text_is_plain_text() -> Result<()> {
    let hook = receiver()?;
    with_emulator(|emu| {
        let evil =
            "<!channel> see <https://evil.example|https://dst.dk>\nrun 1 success\x1b[2J\x07\rX";
        emu.handle().add_fault(
            Fault::always(
                Endpoint::TableInfo,
                FaultKind::ApiError {
                    status: 400,
                    code: "EXTRACT-NOTFOUND".into(),
                    message: evil.into(),
                },
            )
            .for_table("AAA"),
        );
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().display().to_string();
        let base = emu.base_url();
        let webhook = format!("{}/services/T0/B0/tok", hook.url_base);
        let mut args = sync_args(&dir, &base);
        args.extend(["--alert-webhook", &webhook]);
        let out = run("statbank-flow", &args, &[])?;
        ensure!(out.code == Some(2), "{:?}\n{}", out.code, out.stderr);
        for (what, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            ensure!(
                !text.contains(['\x1b', '\x07', '\r']),
                "control bytes on {what}: {text:?}"
            );
        }
        let bodies = hook.got.lock().expect("lock").clone();
        let text = bodies
            .first()
            .and_then(|b| b["text"].as_str())
            .unwrap_or("");
        ensure!(text.contains("&lt;!channel&gt;"), "{text}");
        ensure!(
            !text.contains("<!channel>") && !text.contains("<https://"),
            "{text}"
        );
        ensure!(
            text.lines().all(|l| !l.starts_with("run 1 success")),
            "a faked alert line: {text}"
        );
        ensure!(!text.contains(['\x1b', '\x07', '\r']), "{text:?}");
        Ok(())
    })
}

fn operators_flow_alert() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    const TOKEN: &str = "XoxbT0kenInThePath";
    let hook = receiver()?;
    with_emulator(|emu| {
        let tmp = tempfile::tempdir()?;
        let base = emu.base_url();
        let webhook = format!("{}/services/T0/B0/{TOKEN}", hook.url_base);
        let mut args = sync_args("data", &base);
        args.extend([
            "--metrics-file",
            "m.prom",
            "--apply-retry-delays",
            "0",
            "--alert-webhook",
            &webhook,
        ]);
        let out = run_in(
            Some(tmp.path()),
            "statbank-flow",
            &args,
            &[("DATABASE_URL", "postgres://postgres@127.0.0.1:1/test")],
        )?;
        ensure!(
            out.code == Some(2),
            "{:?}\n{}\n{}",
            out.code,
            out.stdout,
            out.stderr
        );
        let prom_path = tmp.path().join("m.prom");
        let prom = std::fs::read_to_string(&prom_path)
            .with_context(|| format!("no metrics file: {}", out.stderr))?;
        let mode = std::fs::metadata(&prom_path)?.permissions().mode() & 0o777;
        ensure!(mode == 0o644, "metrics file mode {mode:o}");
        ensure!(prom.contains("statbank_apply_pending_runs 1"), "{prom}");
        ensure!(
            prom.contains("statbank_flow_last_status{status=\"partial_failure\"} 1"),
            "{prom}"
        );
        ensure!(
            !prom.contains("statbank_flow_last_success_timestamp_seconds"),
            "no run has succeeded yet: {prom}"
        );
        let bodies = hook.got.lock().expect("lock").clone();
        ensure!(bodies.len() == 1, "{bodies:?}");
        let b = &bodies[0];
        let text = b["text"].as_str().unwrap_or("");
        ensure!(text.contains("partial_failure"), "{text}");
        ensure!(text.contains("apply failed"), "{text}");
        ensure!(
            text.contains("_sync/runs/"),
            "the manifest is named: {text}"
        );
        ensure!(
            b["manifest"].as_str().is_some_and(|m| m.ends_with(".json")),
            "{b}"
        );
        ensure!(
            b["data_dir"].as_str().is_some_and(|d| d.ends_with("data")),
            "{b}"
        );
        ensure!(b["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{b}");
        ensure!(b.get("host").is_some(), "{b}");
        for (what, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            ensure!(!text.contains(TOKEN), "webhook token in {what}:\n{text}");
        }
        ensure!(
            out.stdout
                .contains(&format!("alert to {}/…: delivered", hook.url_base)),
            "{}",
            out.stdout
        );
        let mut stack = vec![tmp.path().to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d)? {
                let p = e?.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let text = String::from_utf8_lossy(&std::fs::read(&p)?).into_owned();
                    ensure!(!text.contains(TOKEN), "webhook token in {}", p.display());
                }
            }
        }
        Ok(())
    })
}

/// A first apply into a database without fact tables skips every table and
/// says how to create them.
fn apply_on_a_fresh_database() -> Result<()> {
    let db = tests::pg::test_db()?;
    with_emulator(|emu| {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().display().to_string();
        let out = run("statbank-sync", &sync_args(&dir, &emu.base_url()), &[])?;
        ensure!(out.code == Some(0), "{}", out.stderr);
        let out = run(
            "statbank-apply",
            &["--data-dir", &dir, "--database-url", db.url()],
            &[],
        )?;
        ensure!(out.code == Some(0), "{}\n{}", out.stdout, out.stderr);
        ensure!(
            out.stdout
                .contains("2 table(s) have no fact table yet; --create-missing creates them"),
            "{}",
            out.stdout
        );
        let out = run(
            "statbank-apply",
            &[
                "--data-dir",
                &dir,
                "--database-url",
                db.url(),
                "--create-missing",
            ],
            &[],
        )?;
        ensure!(out.code == Some(0), "{}\n{}", out.stdout, out.stderr);
        ensure!(!out.stdout.contains("hint:"), "{}", out.stdout);
        Ok(())
    })
}
