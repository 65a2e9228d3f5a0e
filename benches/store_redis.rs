//! P6 / `store_redis`: `RedisStore::append_batch` against raw pipelined `XADD`, batches of
//! 100, 1,000 and 10,000 events.
//!
//! - `append_batch` (ours): fresh `SignupRequested` envelopes (64 bytes of payload) each
//!   iteration; the clock covers encoding and the one `EVALSHA` of the append script
//!   (idempotency check, `XADD` per event at position ids, id index, position counter).
//! - `raw_xadd_pipelined` (the baseline the ratio is taken against): the same events,
//!   encoded once before the clock starts into the very fields the store writes, sent as one
//!   pipeline of `XADD {key} * field value …` to a separate key over a plain TCP connection
//!   (a minimal RESP writer: the `redis` crate is not a dependency of the facade crate, and
//!   a hand-rolled pipeline is the wire's own cost, so the baseline is, if anything, strict).
//!
//! Keys live under `bae_bench:<uuid>` and are deleted after every sample and at the end. At
//! the end the bench prints events/s of both paths and the ratio (medians over the samples
//! of this run). Needs Redis at 127.0.0.1:6379 (or `BAE_REDIS_URL`, `redis://host:port`).
//!
//! `cargo bench --features redis --bench store_redis -- --warm-up-time 1 --measurement-time 3`

mod common;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use better_auth_events::prelude::*;
use better_auth_events::store::RedisStore;
use common::SignupRequested;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Events per `append_batch` call / per pipeline.
const BATCHES: [usize; 3] = [100, 1_000, 10_000];
/// Bytes of string data in each event.
const PAYLOAD: usize = 64;
const START: &str = "redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save \"\" --appendonly no";

/// Events per second of each sample, by (path, batch size).
static SAMPLES: Mutex<BTreeMap<(&'static str, usize), Vec<f64>>> = Mutex::new(BTreeMap::new());

fn record(path: &'static str, batch: usize, events: u64, elapsed: Duration) {
    if elapsed > Duration::ZERO {
        let rate = events as f64 / elapsed.as_secs_f64();
        SAMPLES.lock().expect("samples").entry((path, batch)).or_default().push(rate);
    }
}

fn url() -> String {
    std::env::var("BAE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn addr() -> String {
    let url = url();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority.rsplit('@').next().unwrap_or(authority).to_owned()
}

/// A connection speaking just enough RESP for pipelines of commands with simple replies.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn connect() -> Self {
        let addr = addr();
        let stream = TcpStream::connect(&addr)
            .await
            .unwrap_or_else(|e| panic!("Redis at {addr} is unreachable ({e}); start it with `{START}`"));
        stream.set_nodelay(true).expect("nodelay");
        Self { stream, buf: Vec::with_capacity(1 << 16) }
    }

    /// Sends `commands` (already RESP-encoded, `n` of them) and reads the `n` replies.
    async fn pipeline(&mut self, commands: &[u8], n: usize) {
        self.stream.write_all(commands).await.expect("write");
        let mut done = 0;
        let mut at = 0;
        self.buf.clear();
        while done < n {
            match reply_len(&self.buf[at..]) {
                Some(len) => {
                    at += len;
                    done += 1;
                }
                None => {
                    let mut chunk = [0u8; 1 << 16];
                    let read = self.stream.read(&mut chunk).await.expect("read");
                    assert!(read > 0, "Redis closed the connection");
                    self.buf.extend_from_slice(&chunk[..read]);
                }
            }
        }
    }

    async fn del(&mut self, keys: &[&str]) {
        let mut cmd = Vec::new();
        let args: Vec<&[u8]> = std::iter::once(&b"DEL"[..]).chain(keys.iter().map(|k| k.as_bytes())).collect();
        write_command(&mut cmd, &args);
        self.pipeline(&cmd, 1).await;
    }
}

/// Length of the complete simple reply (`+`, `:`, `$`) at the start of `buf`; panics on an error reply.
fn reply_len(buf: &[u8]) -> Option<usize> {
    let line_end = buf.windows(2).position(|w| w == b"\r\n")?;
    match buf[0] {
        b'+' | b':' => Some(line_end + 2),
        b'$' => {
            let len: i64 = std::str::from_utf8(&buf[1..line_end]).ok()?.parse().ok()?;
            let total = line_end + 2 + if len < 0 { 0 } else { len as usize + 2 };
            (buf.len() >= total).then_some(total)
        }
        b'-' => panic!("Redis error: {}", String::from_utf8_lossy(&buf[..line_end])),
        other => panic!("unexpected reply type {:?}", other as char),
    }
}

fn write_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// The fields `RedisStore` writes for `e` (every optional field is absent in this bench).
fn fields(e: &common::Columns) -> Vec<(&'static str, String)> {
    vec![
        ("id", e.id.clone()),
        ("type", e.event_type.clone()),
        ("source", e.source.clone()),
        ("ts", e.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        ("data", e.data.clone()),
        ("metadata", e.metadata.clone()),
    ]
}

fn store_redis(c: &mut Criterion) {
    let rt = common::multi_thread_runtime();
    let url = url();
    let prefix = format!("bae_bench:{}", uuid::Uuid::now_v7().simple());
    let store = rt
        .block_on(RedisStore::builder(&url).prefix(&prefix).build())
        .unwrap_or_else(|e| panic!("Redis at {url} is unreachable ({e}); start it with `{START}`"));
    let keys = [format!("{prefix}:events"), format!("{prefix}:ids"), format!("{prefix}:position")];
    let raw_key = format!("{prefix}:raw");
    let event = SignupRequested::of_size(PAYLOAD);

    let mut group = c.benchmark_group("store_redis");
    group.sample_size(20);
    group.sampling_mode(SamplingMode::Flat);
    for batch in BATCHES {
        group.throughput(Throughput::Elements(batch as u64));

        group.bench_function(BenchmarkId::new("append_batch", batch), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (store, event, keys) = (store.clone(), event.clone(), keys.clone());
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let envs: Vec<Envelope<SignupRequested>> =
                            (0..batch).map(|_| Envelope::of(event.clone())).collect();
                        let refs: Vec<&Envelope<dyn EventData>> =
                            envs.iter().map(|e| e as &Envelope<dyn EventData>).collect();
                        let start = Instant::now();
                        let out = store.append_batch(black_box(&refs)).await.expect("append_batch");
                        total += start.elapsed();
                        assert!(out.len() == batch && !out[batch - 1].is_duplicate());
                    }
                    record("append_batch", batch, iters * batch as u64, total);
                    let mut raw = Raw::connect().await;
                    raw.del(&[&keys[0], &keys[1], &keys[2]]).await;
                    total
                }
            })
        });

        // The same events, encoded once, outside the clock.
        let envs: Vec<Envelope<SignupRequested>> = (0..batch).map(|_| Envelope::of(event.clone())).collect();
        let encoded: Vec<Vec<(&'static str, String)>> = envs.iter().map(|e| fields(&common::Columns::of(e))).collect();
        group.bench_function(BenchmarkId::new("raw_xadd_pipelined", batch), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (encoded, raw_key) = (&encoded, raw_key.clone());
                async move {
                    let mut raw = Raw::connect().await;
                    let mut total = Duration::ZERO;
                    let mut commands = Vec::with_capacity(batch * 512);
                    let mut args: Vec<&[u8]> = Vec::with_capacity(16);
                    for _ in 0..iters {
                        let start = Instant::now();
                        commands.clear();
                        for fields in black_box(encoded) {
                            args.clear();
                            args.extend_from_slice(&[b"XADD", raw_key.as_bytes(), b"*"]);
                            for (k, v) in fields {
                                args.push(k.as_bytes());
                                args.push(v.as_bytes());
                            }
                            write_command(&mut commands, &args);
                        }
                        raw.pipeline(&commands, batch).await;
                        total += start.elapsed();
                    }
                    record("raw_xadd_pipelined", batch, iters * batch as u64, total);
                    raw.del(&[&raw_key]).await;
                    total
                }
            })
        });
    }
    group.finish();

    rt.block_on(async {
        let mut raw = Raw::connect().await;
        raw.del(&[&keys[0], &keys[1], &keys[2], &raw_key]).await;
    });
    report();
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn report() {
    let samples = SAMPLES.lock().expect("samples");
    println!("\nP6 Redis append, {PAYLOAD}-byte payloads (median events/s of this run's samples; target ≥0.8):");
    println!("{:>8} {:>16} {:>20} {:>7}", "batch", "append_batch", "raw_xadd_pipelined", "ratio");
    for batch in BATCHES {
        let ours = samples.get(&("append_batch", batch)).map_or(0.0, |v| median(v));
        let raw = samples.get(&("raw_xadd_pipelined", batch)).map_or(0.0, |v| median(v));
        let ratio = if raw > 0.0 { ours / raw } else { 0.0 };
        println!("{batch:>8} {ours:>16.0} {raw:>20.0} {ratio:>7.2}");
    }
}

criterion_group!(benches, store_redis);
criterion_main!(benches);
