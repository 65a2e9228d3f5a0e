//! `bae-crash-probe`: the program the crash test (`tests/crash.rs`) kills at random moments
//! and starts again on the same store.
//!
//! ```text
//! bae-crash-probe sqlite PATH emit|emit-tight|drain
//! bae-crash-probe postgres URL SCHEMA emit|emit-tight|drain
//! ```
//!
//! Every mode builds one bus on the store, with two async handlers of `test.crash.emitted`,
//! `audit` and `mail`, whose side effect is a row `(event_id, handler, run, attempt)` in the table
//! `side_effects` of the same database, with the random id of the run that wrote it. The
//! table has no unique key: a delivery that runs twice leaves two rows, which the test
//! counts.
//!
//! - `emit` prints `ready`, then emits events one after another, with a short random
//!   pause now and then, and prints each event's id on its own line once `emit` returned
//!   it: that line is the acknowledgement. It runs until it is killed, or for at most a
//!   minute, then shuts down and exits 0. Its bus has the default worker pool (10 workers,
//!   a queue of 1000): the emit leases the deliveries and runs them at once.
//! - `emit-tight` is `emit` on a pool of 2 workers and a queue of 4: most emits find no
//!   room, so their deliveries wait in the store, unleased, for the pump.
//! - `drain` emits nothing: it waits until no delivery is pending, shuts down and exits 0
//!   (1 when deliveries are still pending after a minute).
//!
//! Deliveries are leased for 300 ms and the pump looks for due ones every 20 ms, so each
//! start takes over soon what the killed one left. Errors exit 1 (2 for bad arguments),
//! with the reason on stderr; the library's warnings go to stderr too.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use better_auth_events::dlq::DeliveryLog;
use better_auth_events::prelude::*;
use better_auth_events::store::{PostgresStore, SqliteStore};
use better_auth_events::{Error, registered_handlers};

/// How long a run holds a delivery before the next run may take it over.
const LEASE: Duration = Duration::from_millis(300);

/// How often the pump looks for due deliveries.
const POLL: Duration = Duration::from_millis(20);

/// The longest an `emit` run goes on when nobody kills it, and the longest `drain` waits.
const MAX_RUN: Duration = Duration::from_secs(60);

/// The event the probe emits.
#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[event(name = "test.crash.emitted", version = "1.0.0")]
struct Emitted {
    /// Its number within the run that emitted it.
    seq: u64,
}

/// Where the handlers write their side effects: `side_effects` in the store's database.
struct SideEffects {
    db: Db,
    /// This run's random id, written with each side effect: the test tells a delivery run
    /// twice by one process from one run again after a restart.
    run: i64,
}

enum Db {
    Sqlite(sqlx::SqlitePool),
    /// The pool, and the table named with the store's schema.
    Postgres(sqlx::PgPool, String),
}

impl SideEffects {
    /// Creates the table if it is missing.
    async fn create(&self) -> Result<(), sqlx::Error> {
        let columns = "(event_id TEXT NOT NULL, handler TEXT NOT NULL, run BIGINT NOT NULL, attempt BIGINT NOT NULL)";
        match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query(&format!("CREATE TABLE IF NOT EXISTS side_effects {columns}")).execute(pool).await?;
            }
            Db::Postgres(pool, table) => {
                sqlx::query(&format!("CREATE TABLE IF NOT EXISTS {table} {columns}")).execute(pool).await?;
            }
        }
        Ok(())
    }

    /// Records that `ctx`'s handler ran for `ctx`'s event.
    async fn record(&self, ctx: &HandlerContext) -> Result<(), HandlerError> {
        let (event_id, handler) = (ctx.event_id().to_string(), ctx.handler_name().to_owned());
        let attempt = i64::from(ctx.attempt());
        let written = match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query("INSERT INTO side_effects (event_id, handler, run, attempt) VALUES (?, ?, ?, ?)")
                    .bind(event_id)
                    .bind(handler)
                    .bind(self.run)
                    .bind(attempt)
                    .execute(pool)
                    .await
                    .map(|_| ())
            }
            Db::Postgres(pool, table) => {
                sqlx::query(&format!("INSERT INTO {table} (event_id, handler, run, attempt) VALUES ($1, $2, $3, $4)"))
                    .bind(event_id)
                    .bind(handler)
                    .bind(self.run)
                    .bind(attempt)
                    .execute(pool)
                    .await
                    .map(|_| ())
            }
        };
        written.map_err(HandlerError::from_error)
    }
}

#[handler(async, name = "audit")]
async fn audit(_: &Emitted, ctx: &HandlerContext, side: Dep<SideEffects>) -> Result<(), HandlerError> {
    side.record(ctx).await
}

#[handler(async, name = "mail")]
async fn mail(_: &Emitted, ctx: &HandlerContext, side: Dep<SideEffects>) -> Result<(), HandlerError> {
    side.record(ctx).await
}

enum Mode {
    Emit,
    EmitTight,
    Drain,
}

/// Why the probe stopped.
enum Failure {
    Usage(String),
    Run(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Self::Run(better_auth_events::ErrorChain(&e).to_string())
    }
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        Self::Run(format!("side-effect table: {e}"))
    }
}

const USAGE: &str = "usage: bae-crash-probe sqlite PATH MODE | bae-crash-probe postgres URL SCHEMA MODE, \
                     MODE one of emit, emit-tight, drain";

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match run(std::env::args().skip(1).collect()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(why)) => {
            eprintln!("bae-crash-probe: {why}\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Failure::Run(why)) => {
            eprintln!("bae-crash-probe: {why}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Vec<String>) -> Result<(), Failure> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (store, db, mode): (Arc<dyn DeliveryLog>, _, _) = match args.as_slice() {
        ["sqlite", path, mode] => {
            let store = SqliteStore::open(path).await?;
            let db = Db::Sqlite(store.pool().clone());
            (Arc::new(store), db, *mode)
        }
        ["postgres", url, schema, mode] => {
            let store = PostgresStore::builder(*url).schema(*schema).build().await?;
            let db = Db::Postgres(store.pool().clone(), format!("\"{schema}\".side_effects"));
            (Arc::new(store), db, *mode)
        }
        _ => return Err(Failure::Usage(format!("unexpected arguments {args:?}"))),
    };
    let mode = match mode {
        "emit" => Mode::Emit,
        "emit-tight" => Mode::EmitTight,
        "drain" => Mode::Drain,
        other => return Err(Failure::Usage(format!("unknown mode `{other}`"))),
    };
    let side = SideEffects { db, run: fastrand::i64(..) };
    side.create().await?;
    let mut bus = EventBus::builder();
    if let Mode::EmitTight = mode {
        bus = bus.workers(2).queue_size(4);
    }
    let bus = bus
        .store_arc(Arc::clone(&store) as Arc<dyn EventStore>)
        .delivery_lease(LEASE)
        .outbox_poll_interval(POLL)
        .handlers(registered_handlers())
        .dependency(side)
        .try_build()
        .await?;
    match mode {
        Mode::Emit | Mode::EmitTight => emit(&bus).await?,
        Mode::Drain => drain(&*store).await?,
    }
    let report = bus.shutdown(Duration::from_secs(5)).await?;
    if !report.is_complete() {
        return Err(Failure::Run(format!("the shutdown left deliveries unfinished: {report:?}")));
    }
    Ok(())
}

/// Emits until killed (or for [`MAX_RUN`]), printing each acknowledged event's id.
async fn emit(bus: &EventBus) -> Result<(), Failure> {
    let print = |line: &str| -> Result<(), Failure> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}").and_then(|()| out.flush()).map_err(|e| Failure::Run(format!("stdout: {e}")))
    };
    print("ready")?;
    let start = Instant::now();
    let mut seq = 0;
    while start.elapsed() < MAX_RUN {
        let receipt = bus.emit(Emitted { seq }).await?;
        print(&receipt.id.to_string())?;
        seq += 1;
        // Now and then a pause of up to 2 ms: the kills land at varied points of the work.
        if fastrand::bool() {
            tokio::time::sleep(Duration::from_micros(fastrand::u64(0..2000))).await;
        }
    }
    Ok(())
}

/// Waits until no delivery is pending (or fails after [`MAX_RUN`]).
async fn drain(store: &dyn DeliveryLog) -> Result<(), Failure> {
    let start = Instant::now();
    loop {
        let pending = store.pending_deliveries().await?;
        if pending == 0 {
            return Ok(());
        }
        if start.elapsed() > MAX_RUN {
            return Err(Failure::Run(format!("{pending} deliveries still pending after {MAX_RUN:?}")));
        }
        tokio::time::sleep(POLL).await;
    }
}
