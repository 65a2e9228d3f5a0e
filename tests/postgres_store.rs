//! `PostgresStore` beyond the conformance suite: connection failures, durability across store
//! instances, schema isolation and validation, plain-SQL access to the stored JSONB, an
//! existing pool, and commit order with appenders in separate stores (separate pools).
//!
//! Needs PostgreSQL at 127.0.0.1:5432, database `test` (or `BAE_POSTGRES_URL`). Each test
//! works in its own schema `bae_test_<uuid>`, dropped when the test ends, pass or fail.
#![cfg(feature = "postgres")]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use better_auth_events::prelude::*;
use better_auth_events::store::PostgresStore;
use better_auth_events::{AppendOutcome, Error, ErrorChain, EventQuery, StoredEvent};
use sqlx::Connection;
use support::postgres::{START, Schema, url};

mod support;

async fn open(schema: &Schema) -> PostgresStore {
    let url = url();
    PostgresStore::builder(&url).schema(&schema.0).build().await.unwrap_or_else(|e| {
        panic!("PostgreSQL at {url} is unreachable or refused the store ({e}); start it with `{START}` or set BAE_POSTGRES_URL")
    })
}

fn dynamic(i: usize) -> Event {
    Event::new("test.pg").with_data(json!({ "i": i }))
}

async fn append_all(store: &PostgresStore, events: &[Event]) -> Vec<AppendOutcome> {
    let refs: Vec<&Envelope<dyn EventData>> = events.iter().map(|e| e as &Envelope<dyn EventData>).collect();
    store.append_batch(&refs).await.expect("append_batch")
}

#[tokio::test]
async fn an_unreachable_server_is_a_store_error_naming_the_url_and_the_cause() {
    let started = Instant::now();
    let err = PostgresStore::builder("postgres://app:s3cret@127.0.0.1:1/test")
        .schema("anything")
        .acquire_timeout(Duration::from_secs(5))
        .build()
        .await
        .expect_err("nothing listens on port 1");
    assert!(started.elapsed() < Duration::from_secs(5), "a refused connection is reported at once");
    assert!(matches!(err, Error::Store { .. }), "{err:?}");
    let msg = ErrorChain(&err).to_string();
    assert!(msg.contains("cannot connect to PostgreSQL at postgres://app:***@127.0.0.1:1/test"), "{msg}");
    assert!(msg.to_lowercase().contains("refused"), "the cause is named: {msg}");
    assert!(!msg.contains("s3cret"), "the password is not shown: {msg}");
}

#[tokio::test]
async fn an_invalid_url_is_a_store_error_naming_it() {
    let schema = Schema::new(); // in case it connected after all
    for bad in ["mysql://127.0.0.1/test", "127.0.0.1:5432", "postgres//127.0.0.1/test"] {
        let err = PostgresStore::builder(bad).schema(&schema.0).build().await.expect_err(bad);
        assert!(matches!(err, Error::Store { .. }), "{err:?}");
        assert!(ErrorChain(&err).to_string().contains(&format!("invalid PostgreSQL URL `{bad}`")), "{err:?}");
    }
}

#[tokio::test]
async fn a_bad_schema_name_is_rejected_with_a_clear_message() {
    for bad in ["events; DROP TABLE users", "a\"b", "", "1st", "pg_events", "my-events"] {
        let err = PostgresStore::builder(url()).schema(bad).build().await.expect_err(bad);
        assert!(matches!(err, Error::Config(_)), "{bad}: {err:?}");
        let msg = ErrorChain(&err).to_string();
        assert!(msg.contains(&format!("invalid PostgresStore schema name `{bad}`")), "{msg}");
        assert!(msg.contains("use ASCII letters, digits and `_`"), "{msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_survive_a_new_store_on_the_same_schema() {
    let schema = Schema::new();
    let events: Vec<Event> = (0..5).map(dynamic).collect();
    let first = {
        let store = open(&schema).await;
        let out = append_all(&store, &events).await;
        store.pool().close().await;
        out
    };
    let store = open(&schema).await; // runs the migrations again: a no-op
    assert_eq!(store.count(&EventQuery::all()).await.expect("count"), 5);
    let back = store.fetch(EventQuery::all()).await.expect("fetch");
    assert_eq!(back.iter().map(|e| e.event.id).collect::<Vec<_>>(), events.iter().map(|e| e.id).collect::<Vec<_>>());
    assert_eq!(
        back.iter().map(|e| e.position).collect::<Vec<_>>(),
        first.iter().map(|o| o.position()).collect::<Vec<_>>()
    );
    // Appending again through the new store is idempotent and positions go on.
    let again = append_all(&store, &events[..1]).await;
    assert_eq!(again, vec![AppendOutcome::Duplicate { position: first[0].position() }]);
    let next = append_all(&store, &[dynamic(5)]).await;
    assert!(next[0].position() > first[4].position());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_on_different_schemas_do_not_see_each_other() {
    let (sa, sb) = (Schema::new(), Schema::new());
    let (a, b) = (open(&sa).await, open(&sb).await);
    assert_ne!(a.lock_key(), b.lock_key(), "and they do not wait for each other's appends");
    let in_a = dynamic(1);
    let in_b = dynamic(2);
    append_all(&a, std::slice::from_ref(&in_a)).await;
    append_all(&b, &[in_b.clone(), dynamic(3)]).await;
    assert_eq!(a.count(&EventQuery::all()).await.expect("count"), 1);
    assert_eq!(b.count(&EventQuery::all()).await.expect("count"), 2);
    assert!(a.get(in_b.id).await.expect("get").is_none());
    assert!(b.get(in_a.id).await.expect("get").is_none());
    // The same id in both schemas is stored twice, once in each.
    assert!(!append_all(&b, std::slice::from_ref(&in_a)).await[0].is_duplicate());
    // Each schema has its own migrations table.
    for (store, schema) in [(&a, &sa), (&b, &sb)] {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = $1 AND table_name IN ('event_store', 'event_deliveries', '_sqlx_migrations')",
        )
        .bind(&schema.0)
        .fetch_one(store.pool())
        .await
        .expect("catalog");
        assert_eq!(n, 3);
    }
}

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[event(name = "test.pg.user.created", version = "2.1.0")]
struct UserCreated {
    user_id: String,
    #[event(pii)]
    email: String,
    age: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_payloads_are_jsonb_that_sql_can_query() {
    let schema = Schema::new();
    let store = open(&schema).await;
    let alice = Envelope::of(UserCreated { user_id: "u1".into(), email: "alice@example.com".into(), age: 41 })
        .with_tenant("acme");
    let bob = Envelope::of(UserCreated { user_id: "u2".into(), email: "bob@example.com".into(), age: 17 });
    store.append(&alice as &Envelope<dyn EventData>).await.expect("append");
    store.append(&bob as &Envelope<dyn EventData>).await.expect("append");

    // The store's pool has its search_path on the schema: plain SQL, unqualified.
    let email: String = sqlx::query_scalar("SELECT data->>'email' FROM event_store WHERE id = $1")
        .bind(alice.id.to_string())
        .fetch_one(store.pool())
        .await
        .expect("select");
    assert_eq!(email, "alice@example.com");
    let adults: Vec<String> = sqlx::query_scalar(
        "SELECT data->>'user_id' FROM event_store \
         WHERE event_type = 'test.pg.user.created' AND (data->>'age')::int >= 18 ORDER BY position",
    )
    .fetch_all(store.pool())
    .await
    .expect("select");
    assert_eq!(adults, ["u1"]);
    let (kind, tenant, meta_tenant, version): (String, Option<String>, Option<String>, Option<String>) =
        sqlx::query_as(
            "SELECT jsonb_typeof(data), tenant, metadata->>'tenant', version FROM event_store WHERE id = $1",
        )
        .bind(alice.id.to_string())
        .fetch_one(store.pool())
        .await
        .expect("select");
    assert_eq!((kind.as_str(), tenant.as_deref(), meta_tenant.as_deref()), ("object", Some("acme"), Some("acme")));
    assert_eq!(version.as_deref(), Some("2.1.0"));
    // And a JSONB containment query, which an index on `data` could serve.
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM event_store WHERE data @> $1::jsonb")
        .bind(r#"{"email": "bob@example.com"}"#)
        .fetch_one(store.pool())
        .await
        .expect("select");
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_pool_is_used_as_is_with_the_schema_qualified() {
    let schema = Schema::new();
    let url = url();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} is unreachable ({e}); start it with `{START}`"));
    let store = PostgresStore::builder("").pool(pool.clone()).schema(&schema.0).build().await.expect("store");
    let e = dynamic(7);
    append_all(&store, std::slice::from_ref(&e)).await;
    assert_eq!(store.get(e.id).await.expect("get").expect("stored").event.data, json!({ "i": 7 }));
    // The pool's connections kept their search_path; the event is in the store's schema.
    let path: String = sqlx::query_scalar("SHOW search_path").fetch_one(&pool).await.expect("show");
    assert!(!path.contains(&schema.0), "{path}");
    let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM \"{}\".event_store WHERE id = $1", schema.0))
        .bind(e.id.to_string())
        .fetch_one(&pool)
        .await
        .expect("select");
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_built_at_once_on_a_new_schema_all_succeed() {
    let schema = Schema::new();
    let url = url();
    let builds = (0..4).map(|_| PostgresStore::builder(&url).schema(&schema.0).max_connections(2).build());
    let stores = futures::future::join_all(builds).await;
    for s in &stores {
        assert!(s.is_ok(), "{:?}", s.as_ref().err());
    }
}

/// Appenders in two stores (two pools, as in two processes) and a tail reader in a third:
/// the advisory lock must keep positions in commit order across pools.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appenders_in_separate_stores_keep_commit_order_for_a_tail_reader() {
    const STORES: usize = 2;
    const TASKS_PER_STORE: usize = 6;
    const BATCHES: usize = 40;
    const PER_BATCH: usize = 3;
    let total = STORES * TASKS_PER_STORE * BATCHES * PER_BATCH;
    let schema = Schema::new();
    let reader = open(&schema).await;
    let writers: Vec<PostgresStore> =
        futures::future::join_all((0..STORES).map(|_| open(&schema))).await.into_iter().collect();

    let appenders_done = Arc::new(AtomicBool::new(false));
    let done = Arc::clone(&appenders_done);
    let tail = tokio::spawn(async move {
        let mut last = 0u64;
        let mut seen: Vec<StoredEvent> = Vec::with_capacity(total);
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen.len() < total && Instant::now() < deadline {
            // Read before the fetch: an empty page after every append committed is the end.
            let finished = done.load(Ordering::SeqCst);
            let page = reader.query().after_position(last).limit(50).fetch().await.expect("tail fetch");
            if page.is_empty() {
                if finished {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            for e in page {
                assert!(e.position > last, "tail went backwards: {} after {last}", e.position);
                last = e.position;
                seen.push(e);
            }
        }
        seen
    });

    let mut tasks = Vec::new();
    for (s, store) in writers.iter().enumerate() {
        for t in 0..TASKS_PER_STORE {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for b in 0..BATCHES {
                    let events: Vec<Event> = (0..PER_BATCH)
                        .map(|k| {
                            Event::new("test.pg.concurrent")
                                .with_data(json!({ "s": s, "t": t, "seq": b * PER_BATCH + k }))
                        })
                        .collect();
                    let out = append_all(&store, &events).await;
                    assert!(out.iter().all(|o| !o.is_duplicate()));
                    let positions: Vec<u64> = out.iter().map(AppendOutcome::position).collect();
                    assert!(positions.windows(2).all(|w| w[0] < w[1]), "a batch's positions follow its order");
                    ids.extend(events.iter().map(|e| e.id).zip(positions));
                }
                ids
            }));
        }
    }
    let mut appended: HashMap<uuid::Uuid, u64> = HashMap::new();
    for task in tasks {
        let ids = task.await.expect("appender");
        assert!(ids.windows(2).all(|w| w[0].1 < w[1].1), "one appender's events increase");
        appended.extend(ids);
    }
    appenders_done.store(true, Ordering::SeqCst);
    assert_eq!(appended.len(), total);
    assert_eq!(appended.values().copied().collect::<HashSet<_>>().len(), total, "distinct positions");

    let seen = tail.await.expect("tail");
    assert_eq!(seen.len(), total, "the tail reader saw every event");
    assert_eq!(seen.iter().map(|e| e.event.id).collect::<HashSet<_>>().len(), total, "each once");
    for e in &seen {
        assert_eq!(appended.get(&e.event.id), Some(&e.position), "position at append = position read");
    }
    assert_eq!(writers[0].query().event_type("test.pg.concurrent").count().await.expect("count"), total as u64);
}

/// Whether a session waits for the advisory lock `key` (`pg_locks` splits a `bigint` key
/// into `classid`, its high 32 bits, and `objid`, its low 32 bits).
async fn waits_for_advisory_lock(conn: &mut sqlx::PgConnection, key: i64) -> bool {
    let bits = key as u64;
    let (high, low) = ((bits >> 32) as i64, (bits & 0xffff_ffff) as i64);
    sqlx::query_scalar::<_, bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
         AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 1)",
    )
    .bind(high)
    .bind(low)
    .fetch_one(conn)
    .await
    .expect("read pg_locks")
}

/// The mechanism behind commit order, checked directly: an append waits while another
/// session holds the store's advisory lock; readers do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_waits_for_the_advisory_lock_and_readers_do_not() {
    let schema = Schema::new();
    let store = open(&schema).await;
    append_all(&store, &[dynamic(0)]).await;
    let mut holder = sqlx::PgConnection::connect(&url()).await.expect("connect");
    sqlx::query("SELECT pg_advisory_lock($1)").bind(store.lock_key()).execute(&mut holder).await.expect("lock");

    let appender = store.clone();
    let append = tokio::spawn(async move { append_all(&appender, &[dynamic(1)]).await });
    // The server shows the append's session waiting for the lock; until then, the append
    // has not reached it or (a failure) went past it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !waits_for_advisory_lock(&mut holder, store.lock_key()).await {
        assert!(!append.is_finished(), "the append must wait for the lock");
        assert!(Instant::now() < deadline, "no session waited for the store's advisory lock within 30 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!append.is_finished(), "the append must wait for the lock");
    // Reads go on meanwhile.
    let read = tokio::time::timeout(Duration::from_secs(5), store.fetch(EventQuery::all())).await;
    assert_eq!(read.expect("a read does not wait for the lock").expect("fetch").len(), 1);

    sqlx::query("SELECT pg_advisory_unlock($1)").bind(store.lock_key()).execute(&mut holder).await.expect("unlock");
    let out = tokio::time::timeout(Duration::from_secs(5), append).await.expect("the append resumes").expect("task");
    assert!(!out[0].is_duplicate());
    assert_eq!(store.count(&EventQuery::all()).await.expect("count"), 2);
    holder.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_batches_report_duplicates_in_input_order() {
    let schema = Schema::new();
    let store = open(&schema).await;
    let early = dynamic(0);
    let early_pos = append_all(&store, std::slice::from_ref(&early)).await[0].position();
    // 20,000 events with an already stored id and an id repeated inside the batch.
    let mut batch: Vec<Event> = (1..=20_000).map(dynamic).collect();
    batch.insert(5_000, early.clone());
    batch.push(batch[10].clone());
    let out = append_all(&store, &batch).await;
    assert_eq!(out.len(), batch.len());
    assert_eq!(out[5_000], AppendOutcome::Duplicate { position: early_pos });
    assert_eq!(out[batch.len() - 1], AppendOutcome::Duplicate { position: out[10].position() });
    let stored: Vec<u64> = out.iter().filter(|o| !o.is_duplicate()).map(AppendOutcome::position).collect();
    assert_eq!(stored.len(), 20_000);
    assert!(stored.windows(2).all(|w| w[0] < w[1]), "positions follow the batch's order");
    assert_eq!(store.count(&EventQuery::all()).await.expect("count"), 20_001);

    // Distinct ids, one of them stored before: the plain insert fails on it, stores
    // nothing, and the batch is appended again without it.
    let (a, b) = (dynamic(30_000), dynamic(30_001));
    let out = append_all(&store, &[a.clone(), early.clone(), b.clone()]).await;
    assert!(!out[0].is_duplicate() && !out[2].is_duplicate(), "{out:?}");
    assert_eq!(out[1], AppendOutcome::Duplicate { position: early_pos });
    assert!(out[0].position() < out[2].position());
    assert_eq!(store.get(a.id).await.expect("get").map(|e| e.position), Some(out[0].position()));
    assert_eq!(store.count(&EventQuery::all()).await.expect("count"), 20_003);
}
