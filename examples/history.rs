//! History: a sign-up flow stored in SQLite, then a query of what happened and a replay of
//! the last hour into a handler that did not exist when the events were emitted.
//!
//! Run with `cargo run --example history` (the database is a temporary file).

use std::sync::{Arc, Mutex};

use better_auth_events::auth::{AfterLogin, AfterSignup, BeforeSignup, UserCreated};
use better_auth_events::chrono::{Duration, Utc};
use better_auth_events::prelude::*;
use better_auth_events::replay::ReplayEngine;
use better_auth_events::store::SqliteStore;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile_dir()?;
    let path = dir.join("events.db");
    let store = SqliteStore::open(&path).await?;
    println!("event store: {}", path.display());

    // 1. A sign-up flow, emitted through a bus that stores every event before `emit`
    //    returns. The correlation middleware ties each user's events together.
    let bus = EventBus::builder().store(store.clone()).middleware(CorrelationMiddleware::new()).try_build().await?;
    for (i, email) in ["ann@example.com", "bob@example.com", "chloe@example.com"].into_iter().enumerate() {
        let user_id = format!("user-{}", i + 1);
        let flow = format!("signup-{}", i + 1);
        bus.emit(Envelope::of(BeforeSignup { email: email.into(), name: None }).with_correlation_id(&flow)).await?;
        bus.emit(
            Envelope::of(UserCreated {
                user_id: user_id.clone(),
                email: email.into(),
                name: None,
                email_verified: false,
            })
            .with_correlation_id(&flow)
            .with_subject(format!("user/{user_id}")),
        )
        .await?;
        bus.emit(
            Envelope::of(AfterSignup { user_id: user_id.clone(), email: email.into() }).with_correlation_id(&flow),
        )
        .await?;
        bus.emit(AfterLogin {
            user_id,
            session_id: format!("s-{}", i + 1),
            method: "password".into(),
            ip_address: None,
        })
        .await?;
    }
    println!("stored {} events\n", store.query().count().await?);

    // 2. Query: what happened to user-2, and every sign-up of the last hour.
    let hour_ago = Utc::now() - Duration::hours(1);
    for e in store.query().correlation_id("signup-2").fetch().await? {
        println!("signup-2  #{:<3} {:<16} {}", e.position, e.event.event_type, e.event.data);
    }
    let created = store.query().event_type("user.created").since(hour_ago).fetch().await?;
    println!("\nusers created in the last hour: {}", created.len());

    // 3. Replay the last hour of `user.created` into a new projection: a handler that knows
    //    it is replaying (and would skip side effects) and builds a directory of users.
    let directory: Arc<Mutex<Vec<String>>> = Arc::default();
    let d = Arc::clone(&directory);
    let projection_bus = EventBus::new();
    projection_bus
        .subscribe(async move |e: &Envelope<UserCreated>| {
            assert!(e.metadata.replay, "replayed events are marked");
            d.lock()
                .map_err(|_| HandlerError::new("directory lock poisoned"))?
                .push(format!("{} <{}>", e.data.user_id, e.data.email));
            Ok::<(), HandlerError>(())
        })
        .await?;
    let engine = ReplayEngine::new(store.clone(), projection_bus);
    let dry = engine.replay().from(hour_ago).event_type("user.created").dry_run().execute().await?;
    println!("dry run: {} events would run {} handlers", dry.events, dry.handlers_run);
    let report = engine
        .replay()
        .from(hour_ago)
        .to(Utc::now())
        .event_type("user.created")
        .on_progress(2, |p| println!("  progress: {} events, up to position {:?}", p.events, p.last_position))
        .execute()
        .await?;
    println!(
        "replayed {} events into {} handler runs ({} failed) in {:?}; resume after position {:?}",
        report.events, report.handlers_run, report.failed, report.elapsed, report.last_position
    );
    println!("directory rebuilt from history:");
    for line in directory.lock().map_err(|_| "directory lock poisoned")?.iter() {
        println!("  {line}");
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// A fresh temporary directory (std only: the example needs no extra crate).
fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("bae-history-{}", better_auth_events::uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
