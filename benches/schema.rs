//! Schema registry costs beside their raw baselines, in one run:
//!
//! - `validate`: checking a dynamic event against its registered JSON Schema
//!   (`SchemaRegistry::validate`, the compiled validator cached) vs
//!   `serde_json::from_value` of the same payload into the typed struct. Target: validation
//!   costs at most 2× the deserialization.
//! - `upcast`: reading a v1 payload as v4 through a 3-step chain (`Event::into_typed`) vs
//!   reading a v4 payload as v4 (`serde_json::from_value`): what the chain adds per event.

use std::hint::black_box;

use better_auth_events::prelude::*;
use better_auth_events::schema::SchemaRegistry;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[event(name = "bench.user.registered", version = "1.0.0")]
struct UserRegistered {
    user_id: String,
    #[event(pii)]
    email: String,
    age: u32,
    #[serde(default)]
    locale: Option<String>,
    roles: Vec<String>,
}

mod chain {
    use super::*;

    #[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
    #[event(name = "bench.chain", version = "1.0.0")]
    pub struct V1 {
        pub user_id: String,
        pub email: String,
    }

    #[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
    #[event(name = "bench.chain", version = "1.1.0", previous = V1)]
    pub struct V2 {
        pub user_id: String,
        pub email: String,
        #[serde(default)]
        pub locale: Option<String>,
    }

    #[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
    #[event(name = "bench.chain", version = "2.0.0", previous = V2)]
    pub struct V3 {
        pub user_id: String,
        #[event(renamed_from = "email")]
        pub email_address: String,
        #[serde(default)]
        pub locale: Option<String>,
    }

    #[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
    #[event(name = "bench.chain", version = "2.1.0", previous = V3)]
    pub struct V4 {
        pub user_id: String,
        pub email_address: String,
        #[serde(default)]
        pub locale: Option<String>,
        #[serde(default)]
        pub verified: Option<bool>,
    }
}

fn payload(string_bytes: usize) -> serde_json::Value {
    let pad = "x".repeat(string_bytes);
    json!({
        "user_id": format!("u-{pad}"),
        "email": format!("{pad}@example.org"),
        "age": 42,
        "locale": "en",
        "roles": ["member", "beta"],
    })
}

fn validate(c: &mut Criterion) {
    let registry = SchemaRegistry::from_registered_events().expect("consistent schemas");
    let mut group = c.benchmark_group("validate");
    group.throughput(Throughput::Elements(1));
    for size in [16usize, 64, 256] {
        let event = Event::new("bench.user.registered").with_data(payload(size));
        group.bench_with_input(BenchmarkId::new("registry_validate", size), &event, |b, e| {
            b.iter(|| registry.validate(black_box(e)).expect("valid"))
        });
        group.bench_with_input(BenchmarkId::new("baseline_from_value", size), &event.data, |b, data| {
            b.iter(|| serde_json::from_value::<UserRegistered>(black_box(data).clone()).expect("reads"))
        });
        // The baseline clones the value (from_value takes it by value); measure the clone
        // alone so the ratio can be read both ways.
        group.bench_with_input(BenchmarkId::new("clone_only", size), &event.data, |b, data| {
            b.iter(|| black_box(data).clone())
        });
    }
    group.finish();
}

fn upcast(c: &mut Criterion) {
    better_auth_events::schema::UpcastChain::global().expect("complete chain");
    let mut group = c.benchmark_group("upcast");
    group.throughput(Throughput::Elements(1));
    let v1 = Event::new("bench.chain")
        .with_version("1.0.0")
        .with_data(json!({ "user_id": "u-1", "email": "a@example.org" }));
    let v4 = Event::new("bench.chain")
        .with_version("2.1.0")
        .with_data(json!({ "user_id": "u-1", "email_address": "a@example.org", "locale": null, "verified": null }));
    group.bench_function("chain_v1_to_v4", |b| {
        b.iter(|| black_box(v1.clone()).into_typed::<chain::V4>().expect("upcasts"))
    });
    group.bench_function("baseline_read_v4", |b| {
        b.iter(|| black_box(v4.clone()).into_typed::<chain::V4>().expect("reads"))
    });
    group.finish();
}

criterion_group!(benches, validate, upcast);
criterion_main!(benches);
