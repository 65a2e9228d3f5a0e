use better_auth_events::prelude::*;
#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[event(name = "sz.e", version = "1.0.0")]
struct E {
    a: String,
}
#[tokio::test]
async fn size() {
    let bus = EventBus::new();
    let f = bus.emit(E { a: "x".into() });
    eprintln!("EMIT FUTURE SIZE {}", std::mem::size_of_val(&f));
    eprintln!("ENVELOPE SIZE {}", std::mem::size_of::<Envelope<E>>());
    eprintln!("EVENT SIZE {}", std::mem::size_of::<Event>());
    eprintln!("CTX SIZE {}", std::mem::size_of::<HandlerContext>());
    f.await.unwrap();
}
