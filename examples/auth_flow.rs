//! A sign-up flow on the built-in authentication events.
//!
//! ```text
//! cargo run --example auth_flow
//! ```
//!
//! - `BeforeSignup` has a sync handler that vetoes banned e-mail domains: `emit` returns
//!   its error and the user is not created.
//! - `AfterSignup` has an async handler that sends the welcome mail through a `Dep<Mailer>`.
//!   The mailer's relay fails once, so the retry policy is visible in the log.
//!
//! Needs no server: the bus runs in process with an in-memory store.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use better_auth_events::auth::{AfterSignup, BeforeSignup, UserCreated};
use better_auth_events::prelude::*;
use better_auth_events::{DeliveryFailure, Error, ErrorChain};
use tracing_subscriber::EnvFilter;
use uuid::Uuid;

const BANNED_DOMAINS: &[&str] = &["spam.example", "mailinator.example"];

/// One mail the mailer sent.
#[derive(Clone, Debug)]
struct Mail {
    to: String,
    subject: String,
    /// The delivery id: the same across retries, so a mail is never sent twice.
    idempotency_key: Uuid,
}

/// A stand-in for an SMTP client: a cheap-to-clone handle that records what it sends.
/// Its relay fails `transient_failures` times before it works.
#[derive(Clone, Default)]
struct Mailer {
    outbox: Arc<Mutex<Vec<Mail>>>,
    transient_failures: Arc<AtomicU32>,
}

impl Mailer {
    fn failing_first(n: u32) -> Self {
        Self { transient_failures: Arc::new(AtomicU32::new(n)), ..Self::default() }
    }

    fn send(&self, to: &str, subject: &str, idempotency_key: Uuid) -> anyhow::Result<()> {
        let failures_left = self.transient_failures.load(Ordering::SeqCst);
        if failures_left > 0 {
            self.transient_failures.store(failures_left - 1, Ordering::SeqCst);
            anyhow::bail!("smtp relay: 421 service not available, try again later");
        }
        let mut outbox = self.outbox.lock().map_err(|_| anyhow::anyhow!("outbox lock poisoned"))?;
        if outbox.iter().any(|m| m.idempotency_key == idempotency_key) {
            return Ok(()); // already sent by an earlier attempt
        }
        println!("mailer: sending \"{subject}\" to {to}");
        outbox.push(Mail { to: to.to_owned(), subject: subject.to_owned(), idempotency_key });
        Ok(())
    }

    fn sent(&self) -> Vec<Mail> {
        self.outbox.lock().map(|o| o.clone()).unwrap_or_default()
    }
}

/// Sync (the default): runs inside `emit`, and its error vetoes the sign-up.
#[handler]
async fn deny_banned_domains(e: &BeforeSignup) -> Result<(), HandlerError> {
    let domain = e.email.rsplit_once('@').map(|(_, domain)| domain).unwrap_or_default();
    if BANNED_DOMAINS.contains(&domain.to_ascii_lowercase().as_str()) {
        return Err(HandlerError::new(format!("sign-ups from the e-mail domain `{domain}` are not allowed")));
    }
    Ok(())
}

/// Async: runs on the worker pool after `emit` returned; failures are retried, never
/// returned to the emitter.
#[handler(async, retry(max_attempts = 3, backoff = "exponential", base = "50ms"))]
async fn send_welcome_mail(e: &Envelope<AfterSignup>, mailer: Dep<Mailer>, ctx: &HandlerContext) -> anyhow::Result<()> {
    println!("send_welcome_mail: attempt {} for user {}", ctx.attempt(), e.data.user_id);
    mailer.send(&e.data.email, "Welcome aboard!", ctx.delivery_id())
}

/// The application's side of a sign-up: ask, create the user, announce.
async fn sign_up(bus: &EventBus, users: &Mutex<Vec<String>>, email: &str, name: &str) -> Result<String, Error> {
    // One correlation id groups the events of this sign-up.
    let correlation_id = Uuid::now_v7().to_string();

    // A veto comes back here as `Error::Handler`; nothing below runs.
    bus.emit(
        Envelope::of(BeforeSignup { email: email.into(), name: Some(name.into()) })
            .with_correlation_id(correlation_id.clone()),
    )
    .await?;

    let user_id = {
        let mut users = users.lock().map_err(|_| Error::Config("user table lock poisoned".into()))?;
        users.push(email.to_owned());
        format!("user-{}", users.len())
    };

    bus.emit(
        Envelope::of(UserCreated {
            user_id: user_id.clone(),
            email: email.into(),
            name: Some(name.into()),
            email_verified: false,
        })
        .with_correlation_id(correlation_id.clone()),
    )
    .await?;
    bus.emit(
        Envelope::of(AfterSignup { user_id: user_id.clone(), email: email.into() }).with_correlation_id(correlation_id),
    )
    .await?;
    Ok(user_id)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_ansi(std::io::stdout().is_terminal())
        .without_time()
        .with_target(false)
        .init();

    let mailer = Mailer::failing_first(1);
    let store = MemoryStore::new(); // clones share the events
    let bus = EventBus::builder()
        .middleware(TracingMiddleware::default())
        .store(store.clone())
        .handlers(registered_handlers()) // deny_banned_domains, send_welcome_mail
        .dependency(mailer.clone()) // handed to `Dep<Mailer>`
        .workers(2)
        .on_failure(|failure: &DeliveryFailure| {
            eprintln!(
                "gave up on `{}` for event {} after {} attempts: {}",
                failure.handler,
                failure.event_id,
                failure.attempts,
                ErrorChain(failure.error)
            );
        })
        .try_build()
        .await?;

    let users = Mutex::new(Vec::new());
    for (email, name) in [("ann@example.com", "Ann"), ("bob@spam.example", "Bob")] {
        match sign_up(&bus, &users, email, name).await {
            Ok(user_id) => println!("signed up {email} as {user_id}"),
            Err(e @ Error::Handler { .. }) => println!("sign-up of {email} refused: {}", ErrorChain(&e)),
            Err(e) => return Err(e.into()),
        }
    }

    // Wait for the async work (the welcome mail and its retry).
    let report = bus.shutdown(Duration::from_secs(5)).await?;
    println!("shutdown: {report:?} (complete: {})", report.is_complete());
    println!("async deliveries: {:?}", bus.stats());

    println!("users created: {:?}", users.lock().map(|u| u.clone()).unwrap_or_default());
    for mail in mailer.sent() {
        println!("mail sent: to={} subject={:?} idempotency_key={}", mail.to, mail.subject, mail.idempotency_key);
    }
    // The vetoed `signup.before` was never stored: sync handlers run before the store.
    let stored: Vec<String> = store.query().fetch().await?.iter().map(|e| e.event.event_type.to_string()).collect();
    println!("events stored: {stored:?}");
    Ok(())
}
