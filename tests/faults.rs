//! Faults: the connection to PostgreSQL or Redis is cut in the middle of a run, through a
//! TCP proxy the test controls (`support::proxy`). While the server is gone, `emit` fails
//! with `Error::Store` and its cause; nothing acknowledged is lost; once the server is back,
//! emits succeed again and every pending delivery runs.
//!
//! Needs PostgreSQL at 127.0.0.1:5432 (or `BAE_POSTGRES_URL`) and Redis at 127.0.0.1:6379
//! (or `BAE_REDIS_URL`); each test works in a schema or key prefix of its own, removed when
//! it ends, pass or fail. A server that cannot be reached fails the test.
#![cfg(any(feature = "postgres", feature = "redis"))]

use std::collections::{HashMap, HashSet};
use std::error::Error as _;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use better_auth_events::dlq::DeliveryLog;
use better_auth_events::prelude::*;
use better_auth_events::{EmitReceipt, Error, ErrorChain, EventQuery, Handler, StoredEvent};
use futures::TryStreamExt;
use support::proxy::Proxy;
use uuid::Uuid;

mod support;

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[event(name = "test.faults.signed_up", version = "1.0.0")]
struct SignedUp {
    n: usize,
}

/// The longest any single await of these tests may take: a hang fails the test.
const BOUND: Duration = Duration::from_secs(10);

/// How long a delivery's lease lasts: one whose completion could not be written runs
/// again this soon.
const LEASE: Duration = Duration::from_secs(1);

/// The warnings and errors the bus logs, kept to see what failed while a server was gone:
/// a failure the bus only logs (a completion it could not write, a claim of the pump) is
/// known to have happened once its line is here.
mod logs {
    use std::fmt::{Debug, Write as _};
    use std::sync::{Mutex, Once};

    use tracing::field::{Field, Visit};
    use tracing::{Level, Subscriber};
    use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
    use tracing_subscriber::util::SubscriberInitExt as _;

    /// A logged warning or error: its text (message and fields) and its `deliveries` field.
    #[derive(Clone, Debug)]
    pub struct Line {
        pub text: String,
        pub deliveries: u64,
    }

    static LINES: Mutex<Vec<Line>> = Mutex::new(Vec::new());

    /// Starts keeping the lines of every thread, once per test binary.
    pub fn capture() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            let _ = tracing_subscriber::registry().with(Keep).try_init();
        });
    }

    /// The lines kept so far that contain every one of `words`.
    pub fn with(words: &[&str]) -> Vec<Line> {
        let lines = LINES.lock().expect("log lines");
        lines.iter().filter(|l| words.iter().all(|w| l.text.contains(w))).cloned().collect()
    }

    struct Keep;

    impl<S: Subscriber> Layer<S> for Keep {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            if *event.metadata().level() > Level::WARN {
                return;
            }
            let mut line = Line { text: String::new(), deliveries: 0 };
            event.record(&mut line);
            LINES.lock().expect("log lines").push(line);
        }
    }

    impl Visit for Line {
        fn record_u64(&mut self, field: &Field, value: u64) {
            if field.name() == "deliveries" {
                self.deliveries = value;
            }
            self.record_debug(field, &value);
        }

        fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
            let _ = write!(self.text, "{}={value:?} ", field.name());
        }
    }
}

/// A store behind the proxy, and the same store reached directly, to check what it holds.
struct Target {
    proxy: Proxy,
    /// Through the proxy: the bus's store.
    store: Arc<dyn DeliveryLog>,
    /// Straight to the server.
    direct: Arc<dyn DeliveryLog>,
    /// What the store's errors name that no other test's do (its schema or key prefix).
    marker: String,
    /// Removes the test's schema or keys when dropped.
    _cleanup: Box<dyn std::any::Any + Send>,
}

/// `fut`, which must finish within [`BOUND`].
async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, fut).await.unwrap_or_else(|_| panic!("{what} did not finish within {BOUND:?}"))
}

/// Checks `result` is the error of an emit while the server is gone: [`Error::Store`],
/// whose chain goes down to a cause. Returns the chain.
fn store_failure<T: std::fmt::Debug>(what: &str, result: Result<T, Error>) -> String {
    match result {
        Err(e @ Error::Store { .. }) => {
            let chain = ErrorChain(&e).to_string();
            let cause = e.source().and_then(|s| s.source());
            assert!(cause.is_some(), "{what}: the error names its cause: {chain}");
            assert!(chain.contains("append"), "{what}: the error names what failed: {chain}");
            chain
        }
        other => panic!("{what}: expected `Error::Store` while the server is gone, got {other:?}"),
    }
}

/// Every run of the recording handler: the event, and whether the server was reachable.
struct Runs {
    up: AtomicBool,
    seen: Mutex<Vec<(Uuid, bool)>>,
}

impl Runs {
    fn new() -> Arc<Self> {
        Arc::new(Self { up: AtomicBool::new(true), seen: Mutex::default() })
    }

    fn record(&self, id: Uuid) {
        let up = self.up.load(Ordering::SeqCst);
        self.seen.lock().expect("runs").push((id, up));
    }

    /// The events whose delivery ran at least once (while the server was up, with `up_only`).
    fn events(&self, up_only: bool) -> HashSet<Uuid> {
        self.seen.lock().expect("runs").iter().filter(|(_, up)| *up || !up_only).map(|(id, _)| *id).collect()
    }
}

/// Waits until the delivery of every event of `acknowledged` ran (while the server was up,
/// with `up_only`), and the store has no pending delivery left.
async fn wait_for_deliveries(t: &Target, runs: &Runs, acknowledged: &[Uuid], up_only: bool) {
    let start = Instant::now();
    let limit = Duration::from_secs(15);
    loop {
        let ran = runs.events(up_only);
        let missing = acknowledged.iter().filter(|id| !ran.contains(id)).count();
        let pending = bounded("counting pending deliveries", t.direct.pending_deliveries()).await;
        if missing == 0 && matches!(pending, Ok(0)) {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "after {limit:?}: {missing} of {} acknowledged events not delivered, pending deliveries: {pending:?}",
            acknowledged.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks, straight on the server, that every acknowledged event is stored exactly once,
/// and that no event is stored twice. Returns the ids stored.
async fn assert_stored_once(t: &Target, acknowledged: &[Uuid]) -> HashSet<Uuid> {
    let stored: Vec<StoredEvent> =
        bounded("reading the store", t.direct.stream(EventQuery::all()).try_collect()).await.expect("read the store");
    let mut copies: HashMap<Uuid, usize> = HashMap::new();
    for e in &stored {
        *copies.entry(e.event.id).or_default() += 1;
    }
    let twice: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "events stored more than once: {twice:?}");
    let lost: Vec<_> = acknowledged.iter().filter(|id| !copies.contains_key(id)).collect();
    assert!(lost.is_empty(), "acknowledged events lost: {lost:?}");
    copies.into_keys().collect()
}

fn recording(runs: &Arc<Runs>) -> Handler {
    let runs = Arc::clone(runs);
    Handler::typed(HandlerOptions::asynchronous().name("record"), async move |e: &Envelope<SignedUp>| {
        runs.record(e.id);
        Ok::<(), HandlerError>(())
    })
}

/// What a second emitter saw, emitting without pause across the cut.
#[derive(Default)]
struct Background {
    acknowledged: Vec<Uuid>,
    refused: Vec<Uuid>,
}

/// Emits until `stop` is set; every failure must be [`Error::Store`].
async fn emit_continuously(bus: EventBus, stop: Arc<AtomicBool>) -> Background {
    let mut seen = Background::default();
    let mut n = 10_000;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let env = Envelope::of(SignedUp { n });
        let id = env.id;
        match bounded("a background emit", bus.emit(env)).await {
            Ok(_) => seen.acknowledged.push(id),
            Err(e @ Error::Store { .. }) => {
                assert!(e.source().is_some(), "a store error names its cause: {e:?}");
                seen.refused.push(id);
            }
            Err(e) => panic!("a background emit failed with something else than `Error::Store`: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    seen
}

/// Emits across an outage: before it (all acknowledged), during it (each fails with
/// `Error::Store` and its cause), after it (acknowledged again, at once), while a second
/// emitter keeps emitting throughout, so that the cut also hits emits in flight. Then every
/// acknowledged event is delivered, nothing stays pending, and every acknowledged event is
/// stored exactly once.
async fn emits_across_an_outage(t: Target) -> Result<(), Error> {
    let runs = Runs::new();
    let bus = EventBus::builder()
        .store_arc(Arc::clone(&t.store) as Arc<dyn EventStore>)
        .delivery_lease(LEASE)
        .outbox_poll_interval(Duration::from_millis(50))
        .handler(recording(&runs))
        .try_build()
        .await?;
    let mut acknowledged: Vec<Uuid> = Vec::new();
    for n in 0..20 {
        let receipt: EmitReceipt = bounded("an emit before the outage", bus.emit(SignedUp { n })).await?;
        assert_eq!(receipt.async_deliveries, 1);
        acknowledged.push(receipt.id);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let background = tokio::spawn(emit_continuously(bus.clone(), Arc::clone(&stop)));
    tokio::time::sleep(Duration::from_millis(100)).await;

    runs.up.store(false, Ordering::SeqCst);
    let cut = t.proxy.down().await;
    assert!(cut > 0, "the cut closed connections in use");
    let outage = Instant::now();
    for n in 100..105 {
        let started = Instant::now();
        let chain =
            store_failure("an emit while the server is gone", bounded("an emit", bus.emit(SignedUp { n })).await);
        eprintln!("emit while down failed after {:?}: {chain}", started.elapsed());
    }
    let chain = store_failure(
        "a batch while the server is gone",
        bounded("a batch", bus.emit_batch((200..203).map(|n| SignedUp { n }))).await,
    );
    eprintln!("emit_batch while down: {chain}");
    t.proxy.up().await;
    runs.up.store(true, Ordering::SeqCst);
    eprintln!("the server was gone for {:?}", outage.elapsed());

    // Back: every emit succeeds, the first one included.
    let back = Instant::now();
    for n in 300..320 {
        let receipt = bounded("an emit after the outage", bus.emit(SignedUp { n }))
            .await
            .unwrap_or_else(|e| panic!("emit {} after the server came back failed: {}", n - 300 + 1, ErrorChain(&e)));
        acknowledged.push(receipt.id);
    }
    eprintln!("20 emits after the outage took {:?}", back.elapsed());

    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::SeqCst);
    let background = bounded("the background emitter", background).await.expect("the background emitter panicked");
    eprintln!(
        "background emitter: {} acknowledged, {} refused with Error::Store",
        background.acknowledged.len(),
        background.refused.len()
    );
    assert!(!background.refused.is_empty(), "the background emitter emitted during the outage");
    acknowledged.extend(background.acknowledged);

    wait_for_deliveries(&t, &runs, &acknowledged, false).await;
    let stored = assert_stored_once(&t, &acknowledged).await;
    // An emit cut off after its write reached the server fails, yet its event is stored
    // (once): the emitter may emit it again, which stores nothing more.
    let refused_but_stored = background.refused.iter().filter(|id| stored.contains(id)).count();
    eprintln!("{refused_but_stored} refused emits were stored nonetheless");
    let report = bounded("the shutdown", bus.shutdown(Duration::from_secs(5))).await?;
    assert!(report.is_complete(), "{report:?}");
    Ok(())
}

/// A server that comes back while nothing uses the store: the first emit after it succeeds,
/// without a failure left over from the outage.
async fn the_first_emit_after_an_outage_succeeds(t: Target) -> Result<(), Error> {
    // No async handler: nothing but these emits uses the store.
    let bus = EventBus::builder().store_arc(Arc::clone(&t.store) as Arc<dyn EventStore>).try_build().await?;
    let mut acknowledged = vec![bounded("an emit", bus.emit(SignedUp { n: 0 })).await?.id];
    t.proxy.down().await;
    store_failure("an emit while the server is gone", bounded("an emit", bus.emit(SignedUp { n: 1 })).await);
    // Long enough for the store's attempts to reconnect, if it makes any, to give up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    t.proxy.up().await;
    for n in 2..5 {
        let receipt = bounded("an emit after the outage", bus.emit(SignedUp { n }))
            .await
            .unwrap_or_else(|e| panic!("emit {} after the server came back failed: {}", n - 1, ErrorChain(&e)));
        acknowledged.push(receipt.id);
    }
    assert_stored_once(&t, &acknowledged).await;
    bounded("the shutdown", bus.shutdown(Duration::from_secs(5))).await?;
    Ok(())
}

/// Cuts the server while deliveries are pending: two running (held by a gate), two queued,
/// the rest in the store for the pump. While it is gone, the running and queued ones finish
/// but their completions cannot be written, the pump's claims fail, and a batch is refused;
/// once it is back, every delivery runs, those that ran during the outage again, and
/// nothing stays pending.
async fn pending_deliveries_across_an_outage(t: Target) -> Result<(), Error> {
    logs::capture();
    let runs = Runs::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (r, g, s) = (Arc::clone(&runs), Arc::clone(&gate), Arc::clone(&started));
    let bus = EventBus::builder()
        .store_arc(Arc::clone(&t.store) as Arc<dyn EventStore>)
        .workers(2)
        .queue_size(2)
        .delivery_lease(LEASE)
        .outbox_poll_interval(Duration::from_millis(50))
        .handler(Handler::typed(HandlerOptions::asynchronous().name("gated"), async move |e: &Envelope<SignedUp>| {
            s.fetch_add(1, Ordering::SeqCst);
            let _open = g.acquire().await.map_err(|_| HandlerError::new("gate closed"))?;
            r.record(e.id);
            Ok::<(), HandlerError>(())
        }))
        .try_build()
        .await?;
    // A batch's deliveries are stored for the pump, which claims what the two workers and
    // the queue of two can take.
    let receipts = bounded("a batch", bus.emit_batch((0..20).map(|n| SignedUp { n }))).await?;
    let acknowledged: Vec<Uuid> = receipts.iter().map(|r| r.id).collect();
    let start = Instant::now();
    while started.load(Ordering::SeqCst) < 2 {
        assert!(start.elapsed() < BOUND, "two deliveries started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The pump fills the queue the two running deliveries left.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(bounded("counting", t.direct.pending_deliveries()).await?, 20);

    runs.up.store(false, Ordering::SeqCst);
    t.proxy.down().await;
    // What was handed over before the cut runs while the server is gone.
    gate.add_permits(1_000);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let during = runs.events(false);
    assert_eq!(during.len(), started.load(Ordering::SeqCst), "every delivery handed over ran");
    assert!((2..=4).contains(&during.len()), "{} deliveries ran during the outage", during.len());
    store_failure(
        "a batch while the server is gone",
        bounded("a batch", bus.emit_batch((100..103).map(|n| SignedUp { n }))).await,
    );
    // Wait until the bus has given up writing their completions (it logs each batch it
    // could not write) and the pump has failed to claim the others.
    let start = Instant::now();
    loop {
        let lost: u64 = logs::with(&["cannot mark deliveries done", &t.marker]).iter().map(|l| l.deliveries).sum();
        let claims = logs::with(&["cannot run the outbox's due deliveries", &t.marker]).len();
        if lost >= during.len() as u64 && claims > 0 {
            break;
        }
        assert!(start.elapsed() < BOUND, "{lost} lost completions and {claims} failed claims logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(runs.events(false).len(), during.len(), "nothing was claimed while the server was gone");
    t.proxy.up().await;
    runs.up.store(true, Ordering::SeqCst);

    // Every delivery runs once the server is back: those left in the store at once, those
    // whose completion was lost when their lease ends.
    wait_for_deliveries(&t, &runs, &acknowledged, true).await;
    assert_stored_once(&t, &acknowledged).await;
    let report = bounded("the shutdown", bus.shutdown(Duration::from_secs(5))).await?;
    assert!(report.is_complete(), "{report:?}");
    Ok(())
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use better_auth_events::store::PostgresStore;
    use support::postgres::{START, Schema, addr, url, url_via};

    /// A fresh schema, reached through a proxy by a store whose pool gives up on a
    /// connection after a second, and directly.
    async fn target() -> Target {
        let schema = Schema::new();
        let proxy = Proxy::start(addr()).await.expect("start the proxy");
        let open = |url: String| {
            let schema = schema.0.clone();
            async move {
                let store = PostgresStore::builder(&url)
                    .schema(&schema)
                    .acquire_timeout(Duration::from_secs(1))
                    .build()
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "PostgreSQL at {url} is unreachable ({}); start it with `{START}` or set BAE_POSTGRES_URL",
                            ErrorChain(&e)
                        )
                    });
                Arc::new(store) as Arc<dyn DeliveryLog>
            }
        };
        // Straight to the server first: an unreachable server is reported as itself.
        let direct = open(url()).await;
        let store = open(url_via(proxy.addr())).await;
        Target { proxy, store, direct, marker: schema.0.clone(), _cleanup: Box::new(schema) }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn emits_across_a_postgres_outage() -> Result<(), Error> {
        emits_across_an_outage(target().await).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_first_emit_after_a_postgres_outage_succeeds() -> Result<(), Error> {
        the_first_emit_after_an_outage_succeeds(target().await).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pending_deliveries_across_a_postgres_outage() -> Result<(), Error> {
        pending_deliveries_across_an_outage(target().await).await
    }
}

#[cfg(feature = "redis")]
mod redis {
    use super::*;
    use better_auth_events::store::RedisStore;
    use support::redis::{Prefix, START, addr, url, url_via};

    /// A fresh prefix, reached through a proxy and directly.
    async fn target() -> Target {
        let prefix = Prefix::new();
        let proxy = Proxy::start(addr()).await.expect("start the proxy");
        let open = |url: String| {
            let prefix = prefix.0.clone();
            async move {
                let store = RedisStore::builder(&url)
                    .prefix(&prefix)
                    .connect_timeout(Duration::from_secs(1))
                    .response_timeout(Duration::from_secs(5))
                    .build()
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "Redis at {url} is unreachable ({}); start it with `{START}` or set BAE_REDIS_URL",
                            ErrorChain(&e)
                        )
                    });
                Arc::new(store) as Arc<dyn DeliveryLog>
            }
        };
        // Straight to the server first: an unreachable server is reported as itself.
        let direct = open(url()).await;
        let store = open(url_via(proxy.addr())).await;
        Target { proxy, store, direct, marker: prefix.0.clone(), _cleanup: Box::new(prefix) }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn emits_across_a_redis_outage() -> Result<(), Error> {
        emits_across_an_outage(target().await).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_first_emit_after_a_redis_outage_succeeds() -> Result<(), Error> {
        the_first_emit_after_an_outage_succeeds(target().await).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pending_deliveries_across_a_redis_outage() -> Result<(), Error> {
        pending_deliveries_across_an_outage(target().await).await
    }
}
