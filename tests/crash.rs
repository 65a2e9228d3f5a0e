//! Crash test of the durable outbox: `bae-crash-probe` (tests/crash/probe.rs) emits in a
//! loop, each event with two async handlers whose side effects land in the store's
//! database, and prints each acknowledged event id. The test kills it with SIGKILL at
//! random moments and starts it again on the same store (every other run on a tight worker
//! pool, whose deliveries mostly wait in the store for the pump), then lets one last run
//! drain what is pending, and checks the database:
//!
//! - every acknowledged event is stored, exactly once;
//! - every stored event (acknowledged or not: a run killed between its commit and its
//!   acknowledgement leaves an event nobody was told about) has a side effect of each
//!   handler, and no side effect belongs to an event that is not stored;
//! - no delivery is pending, and none is dead;
//! - no run logged an error.
//!
//! A delivery may run more than once (its handler finished, the run was killed before its
//! completion was written): those duplicates are counted and printed, not failed, split
//! into those of one run (the same process ran the delivery twice) and those of a later
//! run.
//!
//! `BAE_CRASH_KILLS` sets the number of kills per store (default 20); `scripts/crash-test.sh`
//! runs 200.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use uuid::Uuid;

mod support;

const PROBE: &str = env!("CARGO_BIN_EXE_bae-crash-probe");

/// The handlers of the probe.
const HANDLERS: [&str; 2] = ["audit", "mail"];

/// The event the probe emits.
const EVENT_TYPE: &str = "test.crash.emitted";

/// The longest a run may take to print `ready`.
const START_LIMIT: Duration = Duration::from_secs(20);

/// The longest the draining run may take (it gives up by itself after a minute).
const DRAIN_LIMIT: Duration = Duration::from_secs(90);

/// Kills per store: `BAE_CRASH_KILLS`, else 20.
fn kills() -> usize {
    match std::env::var("BAE_CRASH_KILLS") {
        Ok(n) => n.parse().unwrap_or_else(|_| panic!("BAE_CRASH_KILLS must be a number, not {n:?}")),
        Err(_) => 20,
    }
}

/// One start of the probe: the process, and the threads reading its output.
struct Run {
    child: Child,
    /// Each line of stdout, as it comes.
    lines: mpsc::Receiver<String>,
    stdout: JoinHandle<()>,
    stderr: JoinHandle<String>,
}

/// What a run printed, once it ended.
struct Output {
    status: ExitStatus,
    /// The ids it acknowledged, in order.
    acked: Vec<Uuid>,
    /// Whether it printed `ready`.
    ready: bool,
    /// Lines that were neither `ready` nor a whole id (a line cut by the kill).
    torn: Vec<String>,
    stderr: String,
}

impl Run {
    fn start(args: &[String], mode: &str) -> Self {
        let mut child = Command::new(PROBE)
            .args(args)
            .arg(mode)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {PROBE}: {e}"));
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("piped stdout");
        let stdout = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut err = child.stderr.take().expect("piped stderr");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        });
        Self { child, lines, stdout, stderr }
    }

    /// Waits until the run prints `ready`, keeping the lines read in `seen`; `false` when
    /// the run ends first or takes longer than [`START_LIMIT`].
    fn wait_ready(&self, seen: &mut Vec<String>) -> bool {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == "ready" => {
                    seen.push(line);
                    return true;
                }
                Ok(line) => seen.push(line),
                Err(_) => return false,
            }
        }
    }

    /// Kills the run with SIGKILL, unless it ended already, and collects its output.
    fn kill(mut self, mut seen: Vec<String>) -> Output {
        // `Child::kill` sends SIGKILL on Unix.
        let _ = self.child.kill();
        self.finish(&mut seen)
    }

    /// Waits for the run to end within `limit` (then kills it) and collects its output.
    fn wait(mut self, limit: Duration) -> Output {
        let deadline = Instant::now() + limit;
        while self.child.try_wait().expect("wait for the probe").is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.finish(&mut Vec::new())
    }

    fn finish(mut self, seen: &mut Vec<String>) -> Output {
        let status = self.child.wait().expect("wait for the probe");
        let _ = self.stdout.join();
        seen.extend(self.lines.try_iter());
        let stderr = self.stderr.join().unwrap_or_default();
        let mut output = Output { status, acked: Vec::new(), ready: false, torn: Vec::new(), stderr };
        for line in seen.drain(..) {
            if line == "ready" {
                output.ready = true;
            } else if let Ok(id) = Uuid::parse_str(&line) {
                output.acked.push(id);
            } else {
                output.torn.push(line);
            }
        }
        output
    }
}

/// What the database holds at the end.
#[derive(Debug, Default)]
struct Contents {
    /// Each stored event's id, with how many rows have it.
    events: HashMap<Uuid, i64>,
    /// Side-effect rows per (event id, handler): how many each run wrote.
    side_effects: HashMap<(Uuid, String), Vec<i64>>,
    pending: i64,
    dead: i64,
}

/// What the killed runs printed and logged.
#[derive(Default)]
struct Tally {
    kills: usize,
    /// Kills before the run printed `ready` (during start-up).
    early: usize,
    acked: Vec<Uuid>,
    torn: usize,
    /// Lines of the runs' logs at level ERROR.
    errors: Vec<String>,
    /// How many lines at level WARN.
    warnings: usize,
}

impl Tally {
    /// Takes note of a run's log.
    fn log(&mut self, stderr: &str) {
        for line in stderr.lines() {
            if line.contains(" ERROR ") {
                self.errors.push(line.to_owned());
            } else if line.contains(" WARN ") {
                self.warnings += 1;
            }
        }
    }
}

/// Kills and restarts the probe on one store `kills` times, drains it, then checks what
/// `read` finds in the database. `args` name the store (`sqlite PATH` or `postgres URL
/// SCHEMA`).
fn crash_test(label: &str, args: &[String], read: impl FnOnce() -> Contents) {
    let started = Instant::now();
    let kills = kills();
    let mut tally = Tally::default();
    let mut last_stderr = String::new();
    for round in 0..kills {
        // Every other run on a tight worker pool, whose deliveries mostly wait in the store
        // for the pump rather than run at once.
        let run = Run::start(args, if round % 2 == 0 { "emit" } else { "emit-tight" });
        let mut seen = Vec::new();
        // One kill in five lands during start-up (migrations, the first claims of what the
        // previous run left); the others while the run emits.
        let output = if round % 5 == 4 {
            std::thread::sleep(Duration::from_millis(fastrand::u64(0..60)));
            run.kill(seen)
        } else {
            if !run.wait_ready(&mut seen) {
                let output = run.kill(seen);
                panic!("{label}: run {round} did not get ready ({}); its stderr:\n{}", output.status, output.stderr);
            }
            std::thread::sleep(Duration::from_millis(fastrand::u64(30..=300)));
            run.kill(seen)
        };
        assert!(
            output.status.code().is_none(),
            "{label}: run {round} ended by itself ({}) instead of being killed; its stderr:\n{}",
            output.status,
            output.stderr
        );
        tally.kills += 1;
        if !output.ready {
            tally.early += 1;
        }
        tally.torn += output.torn.len();
        tally.acked.extend(output.acked);
        tally.log(&output.stderr);
        last_stderr = output.stderr;
    }

    let drain = Run::start(args, "drain").wait(DRAIN_LIMIT);
    assert!(
        drain.status.success(),
        "{label}: the draining run failed ({}); its stderr:\n{}\nthe last killed run's stderr:\n{last_stderr}",
        drain.status,
        drain.stderr
    );
    tally.log(&drain.stderr);

    let db = read();
    let report = check(label, &tally, &db);
    println!(
        "crash test ({label}): {} kills ({} during start-up), {} acknowledged, {} stored ({} stored without an \
         acknowledgement), {} side effects, {} duplicates ({} by the same run, {} by a later run), {} torn lines, \
         {} warnings logged, {:.1} s",
        tally.kills,
        tally.early,
        tally.acked.len(),
        db.events.len(),
        report.unacked,
        report.side_effects,
        report.same_run + report.later_run,
        report.same_run,
        report.later_run,
        tally.torn,
        tally.warnings,
        started.elapsed().as_secs_f64(),
    );
    if !report.problems.is_empty() {
        panic!("{label}: the crash test found {} problem(s):\n{}", report.problems.len(), report.problems.join("\n"));
    }
}

/// The outcome of [`check`].
struct Report {
    unacked: usize,
    side_effects: i64,
    /// Side effects of a delivery beyond the first that the same run wrote.
    same_run: i64,
    /// Side effects of a delivery by runs after the first that wrote one.
    later_run: i64,
    problems: Vec<String>,
}

/// Checks the database against what the runs acknowledged.
fn check(label: &str, tally: &Tally, db: &Contents) -> Report {
    let mut problems = Vec::new();
    // At most this many examples of one problem are listed.
    const SHOW: usize = 5;
    let mut note = |what: String, examples: Vec<String>| {
        if !examples.is_empty() {
            let shown: Vec<_> = examples.iter().take(SHOW).cloned().collect();
            problems.push(format!("{label}: {} {what}, e.g. {}", examples.len(), shown.join(", ")));
        }
    };

    let mut seen = HashSet::new();
    note(
        "ids acknowledged twice".into(),
        tally.acked.iter().filter(|id| !seen.insert(**id)).map(Uuid::to_string).collect(),
    );
    note(
        "acknowledged events missing from the store".into(),
        tally.acked.iter().filter(|id| !db.events.contains_key(id)).map(Uuid::to_string).collect(),
    );
    note(
        "events stored more than once".into(),
        db.events.iter().filter(|(_, n)| **n != 1).map(|(id, n)| format!("{id} ({n} rows)")).collect(),
    );
    let mut missing = Vec::new();
    for id in db.events.keys() {
        for handler in HANDLERS {
            if !db.side_effects.contains_key(&(*id, handler.to_owned())) {
                missing.push(format!("{id} `{handler}`"));
            }
        }
    }
    missing.sort();
    note("deliveries of stored events that never ran".into(), missing);
    let orphans: BTreeMap<String, usize> = db
        .side_effects
        .iter()
        .filter(|((id, _), _)| !db.events.contains_key(id))
        .map(|((id, h), runs)| (format!("{id} `{h}`"), runs.len()))
        .collect();
    note("side effects of events that are not stored".into(), orphans.into_keys().collect());
    note("errors logged".into(), tally.errors.clone());
    if db.pending != 0 {
        problems.push(format!("{label}: {} deliveries left pending", db.pending));
    }
    if db.dead != 0 {
        problems.push(format!("{label}: {} dead letters", db.dead));
    }
    Report {
        unacked: db.events.keys().filter(|id| !seen.contains(*id)).count(),
        side_effects: db.side_effects.values().flatten().sum(),
        same_run: db.side_effects.values().flatten().map(|n| n - 1).sum(),
        later_run: db.side_effects.values().map(|runs| runs.len() as i64 - 1).sum(),
        problems,
    }
}

/// Reads the contents from rows of `(id, count)`, `(event id, handler, run, count)` and
/// the two counts.
fn contents(
    events: Vec<(String, i64)>,
    side_effects: Vec<(String, String, i64, i64)>,
    pending: i64,
    dead: i64,
) -> Contents {
    let id = |s: &str| {
        Uuid::parse_str(s).unwrap_or_else(|e| panic!("an event id in the database is not a UUID: {s:?} ({e})"))
    };
    let mut by_delivery: HashMap<(Uuid, String), Vec<i64>> = HashMap::new();
    for (event, handler, _run, n) in side_effects {
        by_delivery.entry((id(&event), handler)).or_default().push(n);
    }
    Contents { events: events.iter().map(|(e, n)| (id(e), *n)).collect(), side_effects: by_delivery, pending, dead }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime")
}

#[test]
fn sqlite_outbox_survives_kills() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("events.db");
    let args = vec!["sqlite".to_owned(), path.display().to_string()];
    crash_test("sqlite", &args, || {
        runtime().block_on(async {
            use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
            let pool = SqlitePool::connect_with(SqliteConnectOptions::new().filename(&path).read_only(true))
                .await
                .expect("open the SQLite file");
            let events = sqlx::query_as(&format!(
                "SELECT id, COUNT(*) FROM event_store WHERE event_type = '{EVENT_TYPE}' GROUP BY id"
            ))
            .fetch_all(&pool)
            .await
            .expect("read the events");
            let side = sqlx::query_as(
                "SELECT event_id, handler, run, COUNT(*) FROM side_effects GROUP BY event_id, handler, run",
            )
            .fetch_all(&pool)
            .await
            .expect("read the side effects");
            let pending = sqlx::query_scalar("SELECT COUNT(*) FROM event_deliveries")
                .fetch_one(&pool)
                .await
                .expect("count the deliveries");
            let dead = sqlx::query_scalar("SELECT COUNT(*) FROM dead_letters")
                .fetch_one(&pool)
                .await
                .expect("count the dead letters");
            pool.close().await;
            contents(events, side, pending, dead)
        })
    });
}

#[test]
fn postgres_outbox_survives_kills() {
    use support::postgres::{START, Schema, url};
    let (url, schema) = (url(), Schema::new());
    let pool = runtime().block_on(async {
        sqlx::PgPool::connect(&url).await.unwrap_or_else(|e| {
            panic!("PostgreSQL at {url} is unreachable ({e}); start it with `{START}` or set BAE_POSTGRES_URL")
        })
    });
    drop(pool);
    let args = vec!["postgres".to_owned(), url.clone(), schema.0.clone()];
    crash_test("postgres", &args, || {
        runtime().block_on(async {
            let pool = sqlx::PgPool::connect(&url).await.expect("connect to PostgreSQL");
            let s = &schema.0;
            let events = sqlx::query_as(&format!(
                "SELECT id, COUNT(*) FROM \"{s}\".event_store WHERE event_type = '{EVENT_TYPE}' GROUP BY id"
            ))
            .fetch_all(&pool)
            .await
            .expect("read the events");
            let side = sqlx::query_as(&format!(
                "SELECT event_id, handler, run, COUNT(*) FROM \"{s}\".side_effects GROUP BY event_id, handler, run"
            ))
            .fetch_all(&pool)
            .await
            .expect("read the side effects");
            let pending = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM \"{s}\".event_deliveries"))
                .fetch_one(&pool)
                .await
                .expect("count the deliveries");
            let dead = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM \"{s}\".dead_letters"))
                .fetch_one(&pool)
                .await
                .expect("count the dead letters");
            pool.close().await;
            contents(events, side, pending, dead)
        })
    });
}
