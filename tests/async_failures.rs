//! An async delivery's failure belongs to that delivery: never to the emitter, never to
//! the other handlers of the event.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use better_auth_events::prelude::*;
use better_auth_events::{DeliveryFailure, Error, Handler};

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[event(name = "test.async_failures.order_placed", version = "1.0.0")]
struct OrderPlaced {
    qty: u32,
}

#[tokio::test]
async fn an_event_an_async_handler_cannot_read_fails_that_delivery_only() -> Result<(), Error> {
    let failures: Arc<Mutex<Vec<(String, u32, String)>>> = Arc::default();
    let typed_runs = Arc::new(AtomicUsize::new(0));
    let dynamic_runs = Arc::new(AtomicUsize::new(0));
    let typed = {
        let runs = Arc::clone(&typed_runs);
        Handler::typed(HandlerOptions::asynchronous().name("reserve-stock"), async move |_: &Envelope<OrderPlaced>| {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    };
    let dynamic = {
        let runs = Arc::clone(&dynamic_runs);
        Handler::dynamic(
            OrderPlaced::NAME,
            HandlerOptions::asynchronous().name("audit"),
            async move |_: &better_auth_events::Event| {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok(())
            },
        )
    };
    let sink = Arc::clone(&failures);
    let bus = EventBus::builder()
        .handler(typed)
        .handler(dynamic)
        // The payload is checked against the handler's type, not against the schema here.
        .validate_dynamic(false)
        .on_failure(move |f: &DeliveryFailure| {
            if let Ok(mut sink) = sink.lock() {
                sink.push((f.handler.to_string(), f.attempts, better_auth_events::ErrorChain(f.error).to_string()));
            }
        })
        .try_build()
        .await?;

    // 5,000,000,000 does not fit the handler's `u32`.
    let receipt = bus.emit(Event::new(OrderPlaced::NAME).with_data(json!({ "qty": 5_000_000_000_u64 }))).await?;
    assert_eq!(receipt.async_deliveries, 1, "only the delivery that can run is handed over");
    let report = bus.shutdown(Duration::from_secs(5)).await?;
    assert!(report.is_complete(), "{report:?}");

    assert_eq!(dynamic_runs.load(Ordering::SeqCst), 1, "the other handler ran");
    assert_eq!(typed_runs.load(Ordering::SeqCst), 0);
    let failures = failures.lock().map(|f| f.clone()).unwrap_or_default();
    assert_eq!(failures.len(), 1, "{failures:?}");
    let (handler, attempts, error) = &failures[0];
    assert_eq!((handler.as_str(), *attempts), ("reserve-stock", 0));
    assert!(error.contains("cannot be read as"), "{error}");
    assert_eq!(bus.stats().failed, 1);
    Ok(())
}
