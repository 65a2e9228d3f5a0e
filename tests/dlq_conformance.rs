//! One conformance suite for the outbox and the dead-letter queue ([`DeliveryLog`]), run
//! against every store: memory, SQLite (a temp file), PostgreSQL (127.0.0.1:5432, database
//! `test`, a fresh schema per test) and Redis (127.0.0.1:6379, a fresh key prefix per
//! test). A test whose server is unreachable fails and says how to start it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use better_auth_events::dlq::{
    AttemptRecord, DLQHandler, DeadLetter, DeadLetterFilter, DeadLetterState, DeliveryKey, DeliveryLog, FailureKind,
    FailureRecord,
};
use better_auth_events::prelude::*;
use better_auth_events::{AppendOutcome, Error};
use chrono::{DateTime, SubsecRound, Utc};

mod support;

/// A store under test, and what removes its data (schema, keys, file) when the test
/// ends, pass or fail: the suite can be re-run and leaves nothing behind.
struct Fixture {
    log: Arc<dyn DeliveryLog>,
    _cleanup: Box<dyn Send>,
}

fn event(kind: &str, i: usize) -> Event {
    Event::new(kind).with_data(json!({ "user_id": format!("u{i}"), "nested": { "list": [1, 2, i] } }))
}

async fn append(log: &dyn DeliveryLog, events: &[Event], handlers: &[&str]) -> Vec<AppendOutcome> {
    let refs: Vec<&Envelope<dyn EventData>> = events.iter().map(|e| e as &Envelope<dyn EventData>).collect();
    log.append_with_deliveries(&refs, handlers, None).await.expect("append_with_deliveries")
}

fn failure(kind: FailureKind, message: &str) -> FailureRecord {
    FailureRecord { kind, message: message.into(), causes: vec!["connection refused".into(), "os error 111".into()] }
}

/// Times as stores keep them: microseconds.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn letter(event: &Event, handler: &str, kind: FailureKind, last_failure: DateTime<Utc>) -> DeadLetter {
    let first = last_failure - chrono::Duration::seconds(3);
    DeadLetter {
        id: uuid::Uuid::now_v7(),
        delivery_id: event.delivery_id(handler),
        event: event.clone(),
        handler: handler.into(),
        attempts: 2,
        first_failure: first,
        last_failure,
        error: failure(kind, "mail server said no"),
        history: vec![
            AttemptRecord { attempt: 1, at: first, error: failure(FailureKind::Failed, "timeout talking to smtp") },
            AttemptRecord { attempt: 2, at: last_failure, error: failure(kind, "mail server said no") },
        ],
        redriven_from: None,
        state: DeadLetterState::Dead,
    }
}

fn key(event: &Event, handler: &str) -> DeliveryKey {
    DeliveryKey { event_id: event.id, handler: handler.into() }
}

async fn buried_letters_list_filter_and_count(log: Arc<dyn DeliveryLog>) {
    let events: Vec<Event> = (0..3).map(|i| event("user.created", i)).chain([event("order.placed", 9)]).collect();
    append(&*log, &events, &["mail", "audit"]).await;
    let base = now() - chrono::Duration::minutes(10);
    let letters = [
        letter(&events[0], "mail", FailureKind::Failed, base),
        letter(&events[1], "mail", FailureKind::Permanent, base + chrono::Duration::minutes(1)),
        letter(&events[2], "audit", FailureKind::Panicked, base + chrono::Duration::minutes(2)),
        letter(&events[3], "mail", FailureKind::Poison, base + chrono::Duration::minutes(3)),
    ];
    for l in &letters {
        log.bury(l).await.expect("bury");
    }
    // Burying removed each delivery from the outbox: 8 appended, 4 buried.
    assert_eq!(log.pending_deliveries().await.expect("pending"), 4);

    let dlq = DLQHandler::from_arc(Arc::clone(&log));
    let ids = |v: Vec<DeadLetter>| v.into_iter().map(|l| l.id).collect::<Vec<_>>();
    let all = dlq.list(DeadLetterFilter::new()).await.expect("list");
    assert_eq!(ids(all), [3, 2, 1, 0].map(|i| letters[i].id), "newest failure first");

    let got = dlq.get(letters[1].id).await.expect("get");
    assert_eq!(got.event.id, events[1].id);
    assert_eq!(got.event.data, events[1].data);
    assert_eq!(got.event.event_type, events[1].event_type);
    assert_eq!(got.handler, "mail");
    assert_eq!(got.delivery_id, events[1].delivery_id("mail"));
    assert_eq!(got.attempts, 2);
    assert_eq!((got.first_failure, got.last_failure), (letters[1].first_failure, letters[1].last_failure));
    assert_eq!(got.error, letters[1].error);
    assert_eq!(got.history, letters[1].history);
    assert_eq!(got.state, DeadLetterState::Dead);

    let by = |f: DeadLetterFilter| {
        let dlq = dlq.clone();
        async move { ids(dlq.list(f).await.expect("list")) }
    };
    assert_eq!(by(DeadLetterFilter::new().handler("audit")).await, [letters[2].id]);
    assert_eq!(by(DeadLetterFilter::new().event_type("order.placed")).await, [letters[3].id]);
    assert_eq!(by(DeadLetterFilter::new().kind(FailureKind::Permanent)).await, [letters[1].id]);
    let window =
        DeadLetterFilter::new().from(base + chrono::Duration::minutes(1)).to(base + chrono::Duration::minutes(3));
    assert_eq!(by(window).await, [letters[2].id, letters[1].id]);
    assert_eq!(by(DeadLetterFilter::new().handler("mail").limit(2)).await, [letters[3].id, letters[1].id]);
    assert!(by(DeadLetterFilter::new().handler("nobody")).await.is_empty());

    let counts = dlq.counts().await.expect("counts");
    assert_eq!(counts.total, 4);
    assert_eq!(counts.by_handler.get("mail"), Some(&3));
    assert_eq!(counts.by_handler.get("audit"), Some(&1));
    assert_eq!(counts.by_event_type.get("user.created"), Some(&3));
    assert_eq!(counts.by_event_type.get("order.placed"), Some(&1));
    let mail = dlq.counts_where(&DeadLetterFilter::new().handler("mail")).await.expect("counts");
    assert_eq!(mail.total, 3);

    match dlq.get(uuid::Uuid::now_v7()).await {
        Err(Error::NotFound { what }) => assert!(what.contains("dead letter"), "{what}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

async fn a_redrive_sends_the_delivery_back_once_even_when_raced(log: Arc<dyn DeliveryLog>) {
    let events = [event("user.created", 1)];
    append(&*log, &events, &["mail"]).await;
    let l = letter(&events[0], "mail", FailureKind::Failed, now());
    log.bury(&l).await.expect("bury");
    assert!(log.claim_due(&["mail"], 10, now() + chrono::Duration::seconds(60)).await.expect("claim").is_empty());

    // Eight redrives of one entry at once: one wins.
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let log = Arc::clone(&log);
            tokio::spawn(async move { log.redrive(l.id).await.expect("redrive").is_some() })
        })
        .collect();
    let mut won = 0;
    for r in racers {
        won += usize::from(r.await.expect("join"));
    }
    assert_eq!(won, 1, "exactly one redrive wins");

    let back = log.claim_due(&["mail"], 10, now() + chrono::Duration::seconds(60)).await.expect("claim");
    assert_eq!(back.len(), 1, "the delivery is pending once");
    assert_eq!(back[0].event.id, events[0].id);
    assert_eq!(back[0].attempts, 0, "a fresh attempt budget");
    assert!(back[0].history.is_empty());
    assert_eq!(back[0].redriven_from, Some(l.id));

    let entry = log.dead_letter(l.id).await.expect("get").expect("kept");
    assert!(matches!(entry.state, DeadLetterState::Redriven { .. }), "{:?}", entry.state);
    let dlq = DLQHandler::from_arc(Arc::clone(&log));
    assert!(!dlq.redrive(l.id).await.expect("second redrive"), "already redriven");
    assert!(dlq.list(DeadLetterFilter::new()).await.expect("list").is_empty());
    assert_eq!(dlq.list(DeadLetterFilter::new().include_settled()).await.expect("list").len(), 1);
    assert!(matches!(dlq.redrive(uuid::Uuid::now_v7()).await, Err(Error::NotFound { .. })));
}

async fn retry_failed_and_discard_settle_entries(log: Arc<dyn DeliveryLog>) {
    let events: Vec<Event> = (0..5).map(|i| event("user.created", i)).collect();
    append(&*log, &events, &["mail"]).await;
    let letters: Vec<DeadLetter> = events.iter().map(|e| letter(e, "mail", FailureKind::Failed, now())).collect();
    for l in &letters {
        log.bury(l).await.expect("bury");
    }
    let dlq = DLQHandler::from_arc(Arc::clone(&log));
    assert!(dlq.discard(letters[0].id, "customer deleted").await.expect("discard"));
    assert!(!dlq.discard(letters[0].id, "again").await.expect("discard twice"));
    let outcome = dlq.retry_failed().await.expect("retry_failed");
    assert_eq!((outcome.done, outcome.skipped), (4, 0));
    assert_eq!(dlq.counts().await.expect("counts").total, 0);

    let settled = dlq.list(DeadLetterFilter::new().include_settled()).await.expect("list");
    assert_eq!(settled.len(), 5);
    let discarded = settled.iter().find(|l| l.id == letters[0].id).expect("kept as audit record");
    match &discarded.state {
        DeadLetterState::Discarded { reason, .. } => assert_eq!(reason, "customer deleted"),
        other => panic!("expected discarded, got {other:?}"),
    }
    // Redriving a discarded entry does nothing.
    assert!(!dlq.redrive(letters[0].id).await.expect("redrive"));
    let back = log.claim_due(&["mail"], 100, now() + chrono::Duration::seconds(60)).await.expect("claim");
    let back: HashSet<_> = back.iter().map(|d| d.event.id).collect();
    let expected: HashSet<_> = events[1..].iter().map(|e| e.id).collect();
    assert_eq!(back, expected);
}

async fn the_outbox_claims_leases_completes_and_retries(log: Arc<dyn DeliveryLog>) {
    let events: Vec<Event> = (0..2).map(|i| event("user.created", i)).collect();
    let outcomes = append(&*log, &events, &["a", "b"]).await;
    assert!(outcomes.iter().all(|o| !o.is_duplicate()));
    assert_eq!(log.pending_deliveries().await.expect("pending"), 4);
    // Appending the same events again stores nothing and adds no delivery.
    let again = append(&*log, &events, &["a", "b"]).await;
    assert!(again.iter().all(|o| o.is_duplicate()));
    assert_eq!(log.pending_deliveries().await.expect("pending"), 4);

    let lease = || now() + chrono::Duration::seconds(60);
    let a = log.claim_due(&["a"], 10, lease()).await.expect("claim a");
    assert_eq!(a.len(), 2);
    assert!(a.iter().all(|d| d.handler == "a" && d.attempts == 0));
    assert_eq!(a.iter().map(|d| d.event.id).collect::<HashSet<_>>(), events.iter().map(|e| e.id).collect());
    assert_eq!(a.iter().find(|d| d.event.id == events[1].id).expect("e1").event.data, events[1].data);
    assert!(log.claim_due(&["a"], 10, lease()).await.expect("claim").is_empty(), "leased");
    assert_eq!(log.claim_due(&["b"], 1, lease()).await.expect("claim b").len(), 1, "limit");

    log.complete(&[key(&events[0], "a")]).await.expect("complete");
    assert_eq!(log.pending_deliveries().await.expect("pending"), 3);

    // A failed attempt, due in an hour: not claimable now, and the next due time says when.
    let later = now() + chrono::Duration::hours(1);
    let failed = AttemptRecord { attempt: 1, at: now(), error: failure(FailureKind::Failed, "smtp down") };
    log.retry_at(&key(&events[1], "a"), later, &failed).await.expect("retry_at");
    assert!(log.claim_due(&["a"], 10, lease()).await.expect("claim").is_empty());
    assert_eq!(log.next_due(&["a"]).await.expect("next_due"), Some(later));
    assert_eq!(log.next_due(&["nobody"]).await.expect("next_due"), None);
    // Due now: claimable, with its history.
    let failed2 = AttemptRecord { attempt: 2, at: now(), error: failure(FailureKind::TimedOut, "slow") };
    log.retry_at(&key(&events[1], "a"), now() - chrono::Duration::seconds(1), &failed2).await.expect("retry_at");
    let retried = log.claim_due(&["a"], 10, lease()).await.expect("claim");
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].attempts, 2);
    assert_eq!(retried[0].history, [failed, failed2]);

    // Released: claimable again at once.
    log.release(&[key(&events[1], "a")]).await.expect("release");
    assert_eq!(log.claim_due(&["a"], 10, lease()).await.expect("claim").len(), 1);

    // A lease that expires hands the delivery to the next claimer.
    let rest = log.claim_due(&["b"], 10, now() + chrono::Duration::milliseconds(200)).await.expect("claim");
    assert_eq!(rest.len(), 1);
    assert!(log.claim_due(&["b"], 10, lease()).await.expect("claim").is_empty());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(log.claim_due(&["b"], 10, lease()).await.expect("claim after expiry").len(), 1);
}

async fn deliveries_leased_at_append_wait_for_their_lease(log: Arc<dyn DeliveryLog>) {
    let events = [event("user.created", 1)];
    let refs: Vec<&Envelope<dyn EventData>> = events.iter().map(|e| e as &Envelope<dyn EventData>).collect();
    let until = now() + chrono::Duration::milliseconds(300);
    log.append_with_deliveries(&refs, &["mail"], Some(until)).await.expect("append");
    assert!(log.claim_due(&["mail"], 10, now() + chrono::Duration::seconds(60)).await.expect("claim").is_empty());
    assert_eq!(log.next_due(&["mail"]).await.expect("next_due"), Some(until));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(log.claim_due(&["mail"], 10, now() + chrono::Duration::seconds(60)).await.expect("claim").len(), 1);
}

async fn one_claim_takes_every_handler_of_an_event(log: Arc<dyn DeliveryLog>) {
    let events: Vec<Event> = (0..3).map(|i| event("user.created", i)).collect();
    append(&*log, &events, &["audit", "mail"]).await;
    let claimed = log.claim_due(&["audit", "mail"], 10, now() + chrono::Duration::seconds(60)).await.expect("claim");
    let got: HashSet<(uuid::Uuid, String)> = claimed.iter().map(|d| (d.event.id, d.handler.clone())).collect();
    let want: HashSet<(uuid::Uuid, String)> =
        events.iter().flat_map(|e| ["audit", "mail"].map(|h| (e.id, h.to_owned()))).collect();
    assert_eq!(got, want, "both deliveries of each event, each with its event");
    assert_eq!(claimed.len(), 6);
    for d in &claimed {
        let event = events.iter().find(|e| e.id == d.event.id).expect("a claimed event");
        assert_eq!(d.event.data, event.data);
    }
}

async fn concurrent_claimers_never_share_a_delivery(log: Arc<dyn DeliveryLog>) {
    let events: Vec<Event> = (0..200).map(|i| event("user.created", i)).collect();
    append(&*log, &events, &["mail"]).await;
    let claimers: Vec<_> = (0..4)
        .map(|_| {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = log.claim_due(&["mail"], 7, now() + chrono::Duration::seconds(60)).await.expect("claim");
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|d| d.event.id));
                }
            })
        })
        .collect();
    let mut seen = HashSet::new();
    let mut total = 0;
    for c in claimers {
        for id in c.await.expect("join") {
            total += 1;
            assert!(seen.insert(id), "delivery {id} was claimed twice");
        }
    }
    assert_eq!(total, 200);
}

macro_rules! dlq_suite {
    ($fresh:expr) => {
        async fn fresh() -> super::Fixture {
            $fresh.await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn buried_letters_list_filter_and_count() {
            let f = fresh().await;
            super::buried_letters_list_filter_and_count(f.log.clone()).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn a_redrive_sends_the_delivery_back_once_even_when_raced() {
            let f = fresh().await;
            super::a_redrive_sends_the_delivery_back_once_even_when_raced(f.log.clone()).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn retry_failed_and_discard_settle_entries() {
            let f = fresh().await;
            super::retry_failed_and_discard_settle_entries(f.log.clone()).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn the_outbox_claims_leases_completes_and_retries() {
            let f = fresh().await;
            super::the_outbox_claims_leases_completes_and_retries(f.log.clone()).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn deliveries_leased_at_append_wait_for_their_lease() {
            let f = fresh().await;
            super::deliveries_leased_at_append_wait_for_their_lease(f.log.clone()).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn one_claim_takes_every_handler_of_an_event() {
            let f = fresh().await;
            super::one_claim_takes_every_handler_of_an_event(f.log.clone()).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn concurrent_claimers_never_share_a_delivery() {
            let f = fresh().await;
            super::concurrent_claimers_never_share_a_delivery(f.log.clone()).await;
        }
    };
}

mod memory {
    dlq_suite!(async {
        super::Fixture { log: std::sync::Arc::new(better_auth_events::MemoryStore::new()), _cleanup: Box::new(()) }
    });
}

#[cfg(feature = "sqlite")]
mod sqlite {
    dlq_suite!(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("events.db");
        let store = better_auth_events::store::SqliteStore::open(&path)
            .await
            .unwrap_or_else(|e| panic!("cannot open SQLite store at {}: {e}", path.display()));
        super::Fixture { log: std::sync::Arc::new(store), _cleanup: Box::new(dir) }
    });
}

#[cfg(feature = "postgres")]
mod postgres {
    dlq_suite!(async {
        use crate::support::postgres::{START, Schema, url};
        let (url, schema) = (url(), Schema::new());
        let store =
            better_auth_events::store::PostgresStore::builder(&url).schema(&schema.0).build().await.unwrap_or_else(
                |e| {
                    panic!(
                        "PostgreSQL at {url} is unreachable or refused the store ({e}); start it with `{START}` or set \
                     BAE_POSTGRES_URL"
                    )
                },
            );
        super::Fixture { log: std::sync::Arc::new(store), _cleanup: Box::new(schema) }
    });
}

#[cfg(feature = "redis")]
mod redis {
    dlq_suite!(async {
        use crate::support::redis::{Prefix, START, url};
        let (url, prefix) = (url(), Prefix::new());
        let store =
            better_auth_events::store::RedisStore::builder(&url).prefix(&prefix.0).build().await.unwrap_or_else(|e| {
                panic!("Redis at {url} is unreachable ({e}); start it with `{START}` or set BAE_REDIS_URL")
            });
        super::Fixture { log: std::sync::Arc::new(store), _cleanup: Box::new(prefix) }
    });
}
