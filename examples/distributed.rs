//! Distributed: a producer process publishes sign-ups to Redis Streams and a worker
//! process runs the async handlers on them, each handler in its own consumer group.
//!
//! One command runs both (the worker as a child process of the producer):
//!
//! ```text
//! cargo run --example distributed --features redis
//! ```
//!
//! Or in two terminals, the worker first (its consumer groups start at the end of the
//! stream, so it sees what is published once it runs):
//!
//! ```text
//! cargo run --example distributed --features redis -- worker auth:events 20
//! cargo run --example distributed --features redis -- producer auth:events 20
//! ```
//!
//! The worker stops after it handled that many sign-ups with both handlers (or on
//! Ctrl-C). Redis at 127.0.0.1:6379, or `BAE_REDIS_URL`.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use better_auth_events::Error;
use better_auth_events::broker::{RedisStreams, redis};
use better_auth_events::prelude::*;
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[event(name = "auth.user_signed_up", version = "1.0.0")]
struct UserSignedUp {
    user_id: String,
    #[event(pii)]
    email: String,
}

/// What the worker has done, and a wake-up when it is done.
struct Progress {
    target: usize,
    done: AtomicUsize,
    finished: tokio::sync::Notify,
    analytics_was_busy: AtomicBool,
}

impl Progress {
    fn tick(&self) {
        if self.done.fetch_add(1, Ordering::SeqCst) + 1 == self.target {
            self.finished.notify_one();
        }
    }
}

/// Sends the welcome mail.
#[handler(async)]
async fn send_welcome_email(
    e: &UserSignedUp,
    ctx: &HandlerContext,
    progress: Dep<Progress>,
) -> Result<(), HandlerError> {
    println!("[worker] send_welcome_email: mail to {} (attempt {})", e.user_id, ctx.attempt());
    progress.tick();
    Ok(())
}

/// Records the sign-up. The analytics service is busy once: the failed attempt goes back
/// to the broker and comes again after the backoff, while the mail handler, in its own
/// consumer group, is not run again.
#[handler(async, retry(max_attempts = 3, backoff = "fixed", base = "200ms"))]
async fn record_signup(e: &UserSignedUp, ctx: &HandlerContext, progress: Dep<Progress>) -> Result<(), HandlerError> {
    if e.user_id == "u-3" && !progress.analytics_was_busy.swap(true, Ordering::SeqCst) {
        println!("[worker] record_signup: {} failed (analytics busy), retried through the broker", e.user_id);
        return Err(HandlerError::new("analytics service busy"));
    }
    println!("[worker] record_signup: {} recorded (attempt {})", e.user_id, ctx.attempt());
    progress.tick();
    Ok(())
}

fn redis_url() -> String {
    std::env::var("BAE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn streams(stream: &str) -> Result<RedisStreams, Error> {
    RedisStreams::builder().url(redis_url()).stream(stream).max_len(100_000).build().await
}

/// The worker process: runs both handlers until each handled `n` sign-ups, or Ctrl-C.
async fn worker(stream: &str, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let progress = Arc::new(Progress {
        target: 2 * n,
        done: AtomicUsize::new(0),
        finished: tokio::sync::Notify::new(),
        analytics_was_busy: AtomicBool::new(false),
    });
    let worker = Worker::builder()
        .broker(streams(stream).await?)
        .handlers(registered_handlers())
        .dependency_arc(Arc::clone(&progress))
        .concurrency(8)
        .build()
        .await?;
    // The consumer groups exist from here on: the producer may start.
    println!("[worker] ready: {} on `{stream}`", worker.handler_names().join(", "));
    let report = worker
        .run_until(async {
            tokio::select! {
                () = progress.finished.notified() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await?;
    println!(
        "[worker] stopped: {} handled, {} retried, {} dead, {} left for redelivery",
        report.succeeded, report.retried, report.dead, report.unfinished
    );
    if report.succeeded < 2 * n as u64 {
        return Err(format!("the worker handled {} of {} deliveries", report.succeeded, 2 * n).into());
    }
    Ok(())
}

/// The producer process: `n` sign-ups, one stream entry each whatever the number of
/// handlers.
async fn producer(stream: &str, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let bus = EventBus::builder().broker(streams(stream).await?).try_build().await?;
    for i in 1..=n {
        bus.emit(UserSignedUp { user_id: format!("u-{i}"), email: format!("user{i}@example.com") }).await?;
    }
    // `emit` returned once Redis had each entry: nothing is left to flush.
    println!("[producer] published {n} sign-ups to `{stream}`");
    Ok(())
}

/// Both processes: this one produces, a child process runs the worker.
async fn demo(n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let stream = format!("bae:example:{}", uuid::Uuid::now_v7().simple());
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["worker", &stream, &n.to_string()])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("the worker's output is not piped")?;
    let mut lines = BufReader::new(stdout).lines();
    // Wait until the worker's consumer groups exist.
    loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .map_err(|_| "the worker did not start within 30 s")??
            .ok_or("the worker exited before it was ready")?;
        println!("{line}");
        if line.starts_with("[worker] ready") {
            break;
        }
    }
    let echo = tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            println!("{line}");
        }
    });
    producer(&stream, n).await?;
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .map_err(|_| "the worker did not finish within 60 s")??;
    let _ = echo.await;
    remove_keys(&stream).await?;
    if !status.success() {
        return Err(format!("the worker failed: {status}").into());
    }
    println!("done: both handlers ran on every sign-up, in another process");
    Ok(())
}

/// Deletes the demo's stream and the keys beside it (dead letters, retries, dedup marks).
async fn remove_keys(stream: &str) -> Result<(), redis::RedisError> {
    let mut conn = redis::Client::open(redis_url())?.get_multiplexed_async_connection().await?;
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{stream}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            let () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let count = |i: usize| args.get(i).map_or(Ok(20), |n| n.parse::<usize>());
    match args.first().map(String::as_str) {
        None => demo(5).await,
        Some("worker") => worker(args.get(1).map_or("auth:events", String::as_str), count(2)?).await,
        Some("producer") => producer(args.get(1).map_or("auth:events", String::as_str), count(2)?).await,
        Some(other) => {
            Err(format!("unknown mode `{other}`: use `worker <stream> <n>` or `producer <stream> <n>`").into())
        }
    }
}
