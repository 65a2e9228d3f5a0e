//! The outbox in the caller's own transaction (`EventBus::emit_in`): a sign-up writes the
//! user row and `UserCreated` with its deliveries together, or neither.
#![cfg(all(feature = "sqlite", feature = "postgres"))]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use better_auth_events::dlq::DeliveryLog;
use better_auth_events::prelude::*;
use better_auth_events::store::sqlx;
use better_auth_events::{Error, Handler};

mod support;

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[event(name = "test.outbox_tx.user_created", version = "1.0.0")]
struct UserCreated {
    user_id: String,
    email: String,
}

type Welcomed = Arc<Mutex<HashSet<String>>>;

/// A bus on `store` with a sync handler that vetoes `banned@…` and an async one that
/// records whom it welcomed.
fn bus(store: impl EventStore, welcomed: &Welcomed) -> EventBus {
    let w = Arc::clone(welcomed);
    EventBus::builder()
        .store(store)
        .outbox_poll_interval(Duration::from_millis(10))
        .handler(Handler::typed(HandlerOptions::new().name("deny-banned"), async |e: &Envelope<UserCreated>| {
            if e.data.email.starts_with("banned@") { Err(HandlerError::new("banned address")) } else { Ok(()) }
        }))
        .handler(Handler::typed(
            HandlerOptions::asynchronous().name("welcome"),
            async move |e: &Envelope<UserCreated>| {
                if let Ok(mut w) = w.lock() {
                    w.insert(e.data.user_id.clone());
                }
                Ok::<(), HandlerError>(())
            },
        ))
        .build()
}

fn user(id: &str) -> UserCreated {
    UserCreated { user_id: id.into(), email: format!("{id}@example.com") }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_sign_up_commits_the_user_and_its_event_together_or_neither() -> Result<(), Box<dyn std::error::Error>>
{
    let dir = tempfile::tempdir()?;
    let store = better_auth_events::store::SqliteStore::open(dir.path().join("app.db")).await?;
    sqlx::query("CREATE TABLE users (id TEXT PRIMARY KEY, email TEXT NOT NULL)").execute(store.pool()).await?;
    let welcomed = Welcomed::default();
    let bus = bus(store.clone(), &welcomed);
    let users = || async {
        let n: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users").fetch_one(store.pool()).await.expect("count");
        n.0
    };

    // Committed: the user, the event, and its delivery, which runs once committed.
    let mut tx = store.pool().begin().await?;
    sqlx::query("INSERT INTO users (id, email) VALUES (?, ?)")
        .bind("ann")
        .bind("ann@example.com")
        .execute(&mut *tx)
        .await?;
    let receipt = bus.emit_in(&mut tx, user("ann")).await?;
    assert_eq!(receipt.async_deliveries, 1);
    assert_eq!(receipt.handlers_run, 1, "the sync handler ran inline");
    tx.commit().await?;
    wait_until("ann's welcome", || welcomed.lock().map(|w| w.contains("ann")).unwrap_or(false)).await;
    assert_eq!(users().await, 1);
    assert!(store.get(receipt.id).await?.is_some());

    // Rolled back: no user, no event, no delivery.
    let mut tx = store.pool().begin().await?;
    sqlx::query("INSERT INTO users (id, email) VALUES (?, ?)")
        .bind("bob")
        .bind("bob@example.com")
        .execute(&mut *tx)
        .await?;
    let rolled_back = bus.emit_in(&mut tx, user("bob")).await?;
    tx.rollback().await?;
    assert!(store.get(rolled_back.id).await?.is_none());
    assert_eq!(users().await, 1);

    // A sync handler's veto writes nothing.
    let mut tx = store.pool().begin().await?;
    let vetoed = bus.emit_in(&mut tx, UserCreated { user_id: "eve".into(), email: "banned@example.com".into() }).await;
    assert!(matches!(vetoed, Err(Error::Handler { .. })), "{vetoed:?}");
    tx.commit().await?;

    // Another sign-up after them runs; bob's never did.
    let mut tx = store.pool().begin().await?;
    bus.emit_in(&mut tx, user("cid")).await?;
    tx.commit().await?;
    wait_until("cid's welcome", || welcomed.lock().map(|w| w.contains("cid")).unwrap_or(false)).await;
    bus.shutdown(Duration::from_secs(5)).await?;
    assert_eq!(*welcomed.lock().expect("lock"), HashSet::from(["ann".to_owned(), "cid".to_owned()]));
    assert_eq!(store.pending_deliveries().await?, 0);
    assert_eq!(store.query().count().await?, 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emit_in_on_a_bus_whose_store_is_not_the_transactions_is_a_configuration_error()
-> Result<(), Box<dyn std::error::Error>> {
    let sqlite = better_auth_events::store::SqliteStore::in_memory().await?;
    let bus = bus(MemoryStore::new(), &Welcomed::default());
    let mut tx = sqlite.pool().begin().await?;
    match bus.emit_in(&mut tx, user("ann")).await {
        Err(Error::Config(message)) => assert!(message.contains("SqliteStore"), "{message}"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_sign_up_commits_the_user_and_its_event_together_or_neither()
-> Result<(), Box<dyn std::error::Error>> {
    use crate::support::postgres::{START, Schema, url};
    let (url, schema) = (url(), Schema::new());
    let store =
        better_auth_events::store::PostgresStore::builder(&url).schema(&schema.0).build().await.unwrap_or_else(|e| {
            panic!("PostgreSQL at {url} is unreachable ({e}); start it with `{START}` or set BAE_POSTGRES_URL")
        });
    let users = format!("\"{}\".users", schema.0);
    sqlx::query(&format!("CREATE TABLE {users} (id TEXT PRIMARY KEY, email TEXT NOT NULL)"))
        .execute(store.pool())
        .await?;
    let welcomed = Welcomed::default();
    let bus = bus(store.clone(), &welcomed);

    let mut tx = store.pool().begin().await?;
    sqlx::query(&format!("INSERT INTO {users} (id, email) VALUES ($1, $2)"))
        .bind("ann")
        .bind("ann@example.com")
        .execute(&mut *tx)
        .await?;
    let committed = bus.emit_in(&mut tx, user("ann")).await?;
    tx.commit().await?;

    let mut tx = store.pool().begin().await?;
    sqlx::query(&format!("INSERT INTO {users} (id, email) VALUES ($1, $2)"))
        .bind("bob")
        .bind("bob@example.com")
        .execute(&mut *tx)
        .await?;
    let rolled_back = bus.emit_in(&mut tx, user("bob")).await?;
    tx.rollback().await?;

    wait_until("ann's welcome", || welcomed.lock().map(|w| w.contains("ann")).unwrap_or(false)).await;
    bus.shutdown(Duration::from_secs(5)).await?;
    assert!(store.get(committed.id).await?.is_some());
    assert!(store.get(rolled_back.id).await?.is_none());
    let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {users}")).fetch_one(store.pool()).await?;
    assert_eq!(n, 1);
    assert_eq!(*welcomed.lock().expect("lock"), HashSet::from(["ann".to_owned()]));
    assert_eq!(store.pending_deliveries().await?, 0);
    Ok(())
}
