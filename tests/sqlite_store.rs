//! What only `SqliteStore` promises, beyond the store conformance suite: durability across a
//! restart, WAL mode, clear errors for files it cannot open, idempotent migrations and
//! batches larger than one statement's bound parameters.
#![cfg(feature = "sqlite")]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use better_auth_events::prelude::*;
use better_auth_events::store::SqliteStore;
use better_auth_events::{AppendOutcome, Error, ErrorChain, EventQuery, StoredEvent};
use futures::StreamExt;

/// A fresh directory for one test's files, and the path of `events.db` in it.
fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("events.db");
    (dir, path)
}

fn bulk(n: usize, tag: &str) -> Vec<Event> {
    (0..n)
        .map(|i| {
            Event::new("sqlite.bulk")
                .with_data(json!({ "tag": tag, "i": i, "pad": "x".repeat(i % 50) }))
                .with_subject(format!("user/{}", i % 7))
                .with_tenant(if i % 2 == 0 { "even" } else { "odd" })
        })
        .collect()
}

async fn append_all(store: &SqliteStore, envs: &[Event]) -> better_auth_events::Result<Vec<AppendOutcome>> {
    let refs: Vec<&Envelope<dyn EventData>> = envs.iter().map(|e| e as &Envelope<dyn EventData>).collect();
    store.append_batch(&refs).await
}

async fn pragma(store: &SqliteStore, name: &str) -> String {
    sqlx::query_scalar(&format!("SELECT CAST({name} AS TEXT) FROM pragma_{name}"))
        .fetch_one(store.pool())
        .await
        .unwrap_or_else(|e| panic!("PRAGMA {name}: {e}"))
}

async fn all_events(store: &SqliteStore) -> Vec<StoredEvent> {
    store.query().stream().map(|r| r.expect("stream item")).collect().await
}

/// Serializing it fails when `poison` is set.
#[derive(Event, Deserialize, JsonSchema, Debug, Clone)]
#[event(name = "sqlite.poison")]
struct Poison {
    poison: bool,
}

impl Serialize for Poison {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.poison {
            return Err(serde::ser::Error::custom("poisoned payload"));
        }
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Poison", 1)?;
        st.serialize_field("poison", &self.poison)?;
        st.end()
    }
}

fn assert_store_error(err: &Error, path: &Path) {
    let message = ErrorChain(err).to_string();
    assert!(matches!(err, Error::Store { store, .. } if store == "sqlite"), "not a store error: {err:?}");
    assert!(message.contains("cannot open SQLite database at"), "{message}");
    assert!(message.contains(&path.display().to_string()), "the message names the path: {message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_the_file_keeps_every_event() {
    let (_dir, path) = temp_db();
    let envs = bulk(300, "before");
    let typed = Envelope::of(Poison { poison: false }).with_correlation_id("corr-1").with_source("/auth");
    let (outcomes, typed_position) = {
        let store = SqliteStore::open(&path).await.expect("open");
        let outcomes = append_all(&store, &envs).await.expect("append");
        let typed_position = store.append(&typed as &Envelope<dyn EventData>).await.expect("append").position();
        store.close().await;
        (outcomes, typed_position)
    };

    // A new store on the same file: a restart.
    let store = SqliteStore::open(&path).await.expect("reopen");
    assert_eq!(store.count(&EventQuery::all()).await.expect("count"), 301);
    let back = all_events(&store).await;
    assert_eq!(back.len(), 301);
    for ((env, outcome), stored) in envs.iter().zip(&outcomes).zip(&back) {
        assert_eq!(stored.position, outcome.position());
        assert_eq!(stored.event.id, env.id);
        assert_eq!(stored.event.data, env.data);
        assert_eq!(stored.event.timestamp, env.timestamp);
        assert_eq!(stored.event.metadata, env.metadata);
        assert_eq!(stored.event.subject, env.subject);
    }
    let got = store.get(typed.id).await.expect("get").expect("still there");
    assert_eq!(got.position, typed_position);
    assert_eq!(got.event.metadata.correlation_id.as_deref(), Some("corr-1"));
    assert_eq!(got.event.source, "/auth");

    // Appending after the restart goes on after the last position, and ids stay unique.
    let again = append_all(&store, &envs[..10]).await.expect("append again");
    assert!(again.iter().zip(&outcomes).all(|(a, b)| *a == AppendOutcome::Duplicate { position: b.position() }));
    let more = append_all(&store, &bulk(5, "after")).await.expect("append more");
    assert_eq!(more[0].position(), typed_position + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_is_in_wal_mode_and_durable_by_default() {
    let (_dir, path) = temp_db();
    let store = SqliteStore::open(&path).await.expect("open");
    assert_eq!(pragma(&store, "journal_mode").await, "wal");
    assert_eq!(pragma(&store, "synchronous").await, "2", "FULL: every commit is fsynced");
    assert_eq!(pragma(&store, "foreign_keys").await, "1");
    store.close().await;
    assert!(path.exists());

    let relaxed = SqliteStore::builder(&path)
        .synchronous_normal(true)
        .max_connections(2)
        .busy_timeout(std::time::Duration::from_secs(1))
        .build()
        .await
        .expect("open with NORMAL");
    assert_eq!(pragma(&relaxed, "journal_mode").await, "wal");
    assert_eq!(pragma(&relaxed, "synchronous").await, "1", "NORMAL when asked for");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_in_a_missing_directory_is_a_clear_error() {
    let (dir, _) = temp_db();
    let path = dir.path().join("no").join("such").join("dir").join("events.db");
    let err = SqliteStore::open(&path).await.expect_err("the directory does not exist");
    assert_store_error(&err, &path);
    assert!(ErrorChain(&err).to_string().contains("does not exist"), "says why: {err:?}");
    assert!(!path.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_a_database_is_a_clear_error_and_is_left_alone() {
    let (_dir, path) = temp_db();
    let garbage = b"this is a text file, not a SQLite database; nothing may overwrite it.\n".repeat(100);
    std::fs::write(&path, &garbage).expect("write");
    let err = SqliteStore::open(&path).await.expect_err("not a database");
    assert_store_error(&err, &path);
    assert!(ErrorChain(&err).to_string().contains("not a database"), "says why: {err:?}");
    assert_eq!(std::fs::read(&path).expect("read"), garbage, "the file is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_in_place_of_the_file_is_a_clear_error() {
    let (dir, _) = temp_db();
    let err = SqliteStore::open(dir.path()).await.expect_err("a directory is not a database file");
    assert_store_error(&err, dir.path());
    assert!(ErrorChain(&err).to_string().contains("is a directory"), "says why: {err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_idempotent() {
    let (_dir, path) = temp_db();
    let first = SqliteStore::open(&path).await.expect("open");
    let envs = bulk(3, "m");
    append_all(&first, &envs).await.expect("append");
    // A second store on the same file while the first is open, then a third after both closed.
    let second = SqliteStore::open(&path).await.expect("open twice");
    assert_eq!(second.count(&EventQuery::all()).await.expect("count"), 3);
    first.close().await;
    second.close().await;
    let third = SqliteStore::open(&path).await.expect("open a third time");
    let (applied,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(third.pool())
        .await
        .expect("migrations table");
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/runtime/migrations/sqlite"))
        .expect("migrations dir")
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql")))
        .count();
    assert_eq!(applied as usize, files, "each migration applied once");
    assert_eq!(third.count(&EventQuery::all()).await.expect("count"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_one_insert_is_stored_whole_and_in_order() {
    const N: usize = 5_000; // 10 bound parameters each: more than one statement's 32,766
    let (_dir, path) = temp_db();
    let store = SqliteStore::open(&path).await.expect("open");
    let head = bulk(10, "head");
    append_all(&store, &head).await.expect("append head");

    // Repeat a few of the head (already stored) and a few of the batch itself (after the
    // first chunk), to check duplicates across chunks.
    let mut envs = bulk(N, "big");
    envs.insert(4_000, head[3].clone());
    envs.push(envs[1].clone());
    envs.push(envs[3_500].clone());
    let out = append_all(&store, &envs).await.expect("append 5,000");
    assert_eq!(out.len(), N + 3);
    let stored: Vec<u64> = out.iter().filter(|o| !o.is_duplicate()).map(AppendOutcome::position).collect();
    assert_eq!(stored, (11..=10 + N as u64).collect::<Vec<_>>(), "consecutive positions in batch order");
    assert_eq!(out[4_000], AppendOutcome::Duplicate { position: 4 });
    assert_eq!(out[N + 1], AppendOutcome::Duplicate { position: out[1].position() });
    assert_eq!(out[N + 2], AppendOutcome::Duplicate { position: out[3_500].position() });
    assert_eq!(store.count(&EventQuery::all()).await.expect("count"), 10 + N as u64);

    let back = all_events(&store).await;
    assert_eq!(back.len(), 10 + N);
    for (i, e) in back[10..].iter().enumerate() {
        assert_eq!(e.event.data["i"], json!(i), "event {i} in order");
        assert_eq!(e.event.data["tag"], json!("big"));
    }
    assert_eq!(store.query().tenant("odd").event_type("sqlite.bulk").count().await.expect("count"), 5 + N as u64 / 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_batch_failing_in_its_last_chunk_stores_nothing() {
    const N: usize = 5_000;
    let (_dir, path) = temp_db();
    let store = SqliteStore::open(&path).await.expect("open");
    let envs = bulk(N, "doomed");
    // The database refuses the last event: the first chunk, already inserted in the same
    // transaction, must be rolled back with it.
    let refused = envs[N - 1].id.to_string();
    sqlx::query(&format!(
        "CREATE TRIGGER refuse BEFORE INSERT ON event_store WHEN NEW.id = '{refused}' \
         BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END"
    ))
    .execute(store.pool())
    .await
    .expect("trigger");
    let err = append_all(&store, &envs).await.expect_err("the trigger refuses the batch");
    assert!(matches!(err, Error::Store { .. }), "{err:?}");
    assert!(ErrorChain(&err).to_string().contains("refused by test trigger"), "{err:?}");
    assert_eq!(store.count(&EventQuery::all()).await.expect("count"), 0);
    assert!(store.get(envs[0].id).await.expect("get").is_none());

    // A payload that cannot be serialized, at the end of a large batch, stores nothing either.
    let mut typed: Vec<Envelope<Poison>> = (0..N).map(|_| Envelope::of(Poison { poison: false })).collect();
    typed.push(Envelope::of(Poison { poison: true }));
    let refs: Vec<&Envelope<dyn EventData>> = typed.iter().map(|e| e as &Envelope<dyn EventData>).collect();
    let err = store.append_batch(&refs).await.expect_err("poisoned");
    assert!(ErrorChain(&err).to_string().contains("poisoned payload"), "{err:?}");
    assert_eq!(store.count(&EventQuery::all()).await.expect("count"), 0);

    // The store works on afterwards, and positions have no gap.
    let out = append_all(&store, &envs[..N - 1]).await.expect("append without the refused one");
    assert_eq!(out.first().map(AppendOutcome::position), Some(1));
    assert_eq!(out.last().map(AppendOutcome::position), Some(N as u64 - 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_file_append_concurrently_without_loss() {
    // Two pools on one file behave like two processes: they serialize on SQLite's lock.
    let (_dir, path) = temp_db();
    let a = Arc::new(SqliteStore::open(&path).await.expect("open a"));
    let b = Arc::new(SqliteStore::open(&path).await.expect("open b"));
    let mut tasks = Vec::new();
    for (k, store) in [a.clone(), b.clone(), a.clone(), b.clone()].into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut positions = Vec::new();
            for batch in 0..20 {
                let envs = bulk(25, &format!("t{k}b{batch}"));
                let out = append_all(&store, &envs).await.expect("append");
                positions.extend(out.iter().map(AppendOutcome::position));
            }
            positions
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let positions = t.await.expect("task");
        assert!(positions.windows(2).all(|w| w[0] < w[1]));
        all.extend(positions);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=2_000).collect::<Vec<u64>>(), "every event has its own position, no gaps");
    assert_eq!(a.count(&EventQuery::all()).await.expect("count"), 2_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_store_works_like_the_file_store() {
    let store = SqliteStore::in_memory().await.expect("in memory");
    let envs = bulk(1_500, "mem");
    append_all(&store, &envs).await.expect("append");
    assert_eq!(store.query().subject("user/3").count().await.expect("count"), 214);
    assert_eq!(all_events(&store).await.len(), 1_500);
    let other = SqliteStore::in_memory().await.expect("another");
    assert_eq!(other.count(&EventQuery::all()).await.expect("count"), 0, "each in-memory store is its own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_stay_right_when_a_trigger_writes_to_the_table_too() {
    let (_dir, path) = temp_db();
    let store = SqliteStore::open(&path).await.expect("open");
    // Each event gets a shadow row, inserted between it and the next one of the batch.
    sqlx::query(
        "CREATE TRIGGER shadow AFTER INSERT ON event_store WHEN NEW.event_type = 'sqlite.shadowed' BEGIN \
         INSERT INTO event_store (id, event_type, source, data, timestamp) \
         VALUES (NEW.id || '-shadow', 'sqlite.shadow', NEW.source, '{}', NEW.timestamp); END",
    )
    .execute(store.pool())
    .await
    .expect("trigger");
    let envs: Vec<Event> = (0..5).map(|i| Event::new("sqlite.shadowed").with_data(json!({ "i": i }))).collect();
    let out = append_all(&store, &envs).await.expect("append");
    assert_eq!(out.iter().map(AppendOutcome::position).collect::<Vec<_>>(), [1, 3, 5, 7, 9]);
    for (e, o) in envs.iter().zip(&out) {
        assert_eq!(store.get(e.id).await.expect("get").expect("stored").position, o.position());
    }
}
