//! Dead letters: a flaky mail handler retried with backoff, a permanent failure that lands
//! in the dead-letter queue, an operator's look at it, a fix, and a redrive that succeeds.
//!
//! Run with `cargo run --example dead_letters` (the database is a temporary SQLite file;
//! no server needed).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use better_auth_events::dlq::DeliveryLog;
use better_auth_events::dlq::{DLQHandler, DeadLetterFilter};
use better_auth_events::prelude::*;
use better_auth_events::store::SqliteStore;

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[event(name = "shop.order_placed", version = "1.0.0")]
struct OrderPlaced {
    order_id: String,
    email: String,
    /// The customer's tax id, which the invoicing service validates.
    tax_id: String,
}

/// The mail server answers on the third try.
#[derive(Default)]
struct MailServer {
    calls: AtomicU32,
}

/// The invoicing service rejects a tax id it cannot parse, until it is fixed.
#[derive(Default)]
struct Invoicing {
    accepts_eu_vat: AtomicBool,
}

/// Sends the order confirmation: the mail server times out twice, then takes it. Retried
/// with exponential backoff from 50 ms.
#[handler(async, retry(max_attempts = 5, backoff = "exponential", base = "50ms"))]
async fn send_confirmation(e: &OrderPlaced, ctx: &HandlerContext, mail: Dep<MailServer>) -> Result<(), HandlerError> {
    let call = mail.calls.fetch_add(1, Ordering::SeqCst) + 1;
    if call < 3 {
        println!("  send_confirmation: attempt {} for {}: SMTP timeout", ctx.attempt(), e.email);
        return Err(HandlerError::new("SMTP timeout after 5 s"));
    }
    println!("  send_confirmation: attempt {} for {}: sent", ctx.attempt(), e.email);
    Ok(())
}

/// Creates the invoice. A tax id the service cannot parse is a permanent error: retrying
/// cannot fix it, so the delivery goes straight to the dead-letter queue.
#[handler(async)]
async fn create_invoice(e: &OrderPlaced, ctx: &HandlerContext, invoicing: Dep<Invoicing>) -> Result<(), HandlerError> {
    if e.tax_id.starts_with("EU") && !invoicing.accepts_eu_vat.load(Ordering::SeqCst) {
        println!("  create_invoice: {} rejected (tax id {})", e.order_id, e.tax_id);
        return Err(HandlerError::permanent(format!("tax id `{}` has an unknown format", e.tax_id)));
    }
    let from_dlq = ctx.redriven_from().map(|id| format!(" (redriven from dead letter {id})")).unwrap_or_default();
    println!("  create_invoice: invoice for {} created{from_dlq}", e.order_id);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir =
        std::env::temp_dir().join(format!("bae-dead-letters-{}", better_auth_events::uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir)?;
    let store = SqliteStore::open(dir.join("events.db")).await?;
    let invoicing = Arc::new(Invoicing::default());
    let bus = EventBus::builder()
        .store(store.clone())
        .handlers(registered_handlers())
        .dependency(MailServer::default())
        .dependency_arc(Arc::clone(&invoicing))
        .outbox_poll_interval(Duration::from_millis(50))
        .try_build()
        .await?;
    let dlq = DLQHandler::new(store.clone());

    println!("1. An order is placed: the mail server is flaky, and the invoice has an EU VAT id.");
    bus.emit(OrderPlaced { order_id: "order-1".into(), email: "ann@example.com".into(), tax_id: "EU372000041".into() })
        .await?;
    wait_until(|| async { store_is_settled(&store, &dlq).await }).await?;

    println!("\n2. The operator looks at the dead-letter queue:");
    let counts = dlq.counts().await?;
    println!("  {} dead letter(s), per handler: {:?}", counts.total, counts.by_handler);
    let letters = dlq.list(DeadLetterFilter::new().handler("create_invoice")).await?;
    for letter in &letters {
        println!(
            "  {}: event {} ({}) for `{}`: {} after {} attempt(s): {}",
            letter.id,
            letter.event.id,
            letter.event_type(),
            letter.handler,
            letter.error.kind,
            letter.attempts,
            letter.error
        );
        println!("    payload: {}", letter.event.data);
    }

    println!("\n3. The invoicing service learns EU VAT ids; the operator redrives the entry.");
    invoicing.accepts_eu_vat.store(true, Ordering::SeqCst);
    for letter in &letters {
        let sent_back = dlq.redrive(letter.id).await?;
        println!("  redrive {}: {}", letter.id, if sent_back { "sent back to its handler" } else { "already settled" });
    }
    wait_until(|| async { store.pending_deliveries().await.map(|n| n == 0).unwrap_or(false) }).await?;

    println!("\n4. Afterwards:");
    let counts = dlq.counts().await?;
    println!("  {} dead letter(s) left", counts.total);
    for letter in dlq.list(DeadLetterFilter::new().include_settled()).await? {
        println!("  {} is {:?}", letter.id, letter.state);
    }
    let report = bus.shutdown(Duration::from_secs(5)).await?;
    println!("  shutdown: {} unfinished deliveries; stats {:?}", report.unfinished.len(), bus.stats());
    std::fs::remove_dir_all(&dir)?;
    if counts.total != 0 {
        return Err(format!("expected an empty queue, {} left", counts.total).into());
    }
    Ok(())
}

/// Whether nothing is pending any more: every delivery succeeded or is a dead letter.
async fn store_is_settled(store: &SqliteStore, dlq: &DLQHandler) -> bool {
    let pending = store.pending_deliveries().await.unwrap_or(u64::MAX);
    let dead = dlq.counts().await.map(|c| c.total).unwrap_or(0);
    pending == 0 && dead == 1
}

/// Polls `done` for up to ten seconds.
async fn wait_until<F: std::future::Future<Output = bool>>(
    mut done: impl FnMut() -> F,
) -> Result<(), Box<dyn std::error::Error>> {
    for _ in 0..1000 {
        if done().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err("timed out waiting for the deliveries".into())
}
