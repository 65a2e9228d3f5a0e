//! Schema evolution: events written as v1 while the code moves to v2 and v3; every old
//! event reads back as v3. Prints the compatibility of each step, the migration plans and
//! the SQL that would rewrite stored payloads in place.
//!
//! Run with `cargo run --example schema_evolution`.

use better_auth_events::prelude::*;
use better_auth_events::schema::{EventSchema, SchemaRegistry, SqlDialect, Upcast};

/// What the first release wrote.
mod v1 {
    use super::*;

    #[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
    #[event(name = "profile.updated", version = "1.0.0")]
    pub struct ProfileUpdated {
        pub user_id: String,
        pub display_name: String,
    }
}

/// Release 2 adds an optional locale: a compatible change, a minor bump, and an upcaster
/// the derive generates.
mod v2 {
    use super::*;

    #[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
    #[event(name = "profile.updated", version = "1.1.0", previous = super::v1::ProfileUpdated)]
    pub struct ProfileUpdated {
        pub user_id: String,
        pub display_name: String,
        #[serde(default)]
        pub locale: Option<String>,
    }
}

/// Release 3 renames `display_name` and splits the user id into a number: a breaking
/// change, a major bump, and an upcaster written by hand.
mod v3 {
    use super::*;

    #[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
    #[event(name = "profile.updated", version = "2.0.0", previous = super::v2::ProfileUpdated, upcast = "manual")]
    pub struct ProfileUpdated {
        pub user_number: u64,
        #[event(renamed_from = "display_name")]
        pub name: String,
        #[serde(default)]
        pub locale: Option<String>,
    }

    impl Upcast<super::v2::ProfileUpdated> for ProfileUpdated {
        fn upcast(old: super::v2::ProfileUpdated) -> Self {
            Self {
                user_number: old.user_id.trim_start_matches("user-").parse().unwrap_or_default(),
                name: old.display_name,
                locale: old.locale,
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), better_auth_events::Error> {
    // 1. The first release writes v1 events.
    let store = MemoryStore::new();
    let bus = EventBus::builder().store(store.clone()).try_build().await?;
    for (id, name) in [("user-1", "Ann"), ("user-2", "Bob"), ("user-3", "Chloé")] {
        bus.emit(v1::ProfileUpdated { user_id: id.into(), display_name: name.into() }).await?;
    }
    println!("stored {} v1 events\n", store.query().count().await?);

    // 2. Every version is in the registry; the version rules held (the bus build checked
    //    them, and the upcast chain v1 → v2 → v3, at start-up).
    let registry = SchemaRegistry::from_registered_events()?;
    let versions: Vec<String> = registry.versions("profile.updated").iter().map(ToString::to_string).collect();
    println!("registered versions of profile.updated: {}", versions.join(", "));

    let (s1, s2, s3) = (
        EventSchema::of::<v1::ProfileUpdated>(),
        EventSchema::of::<v2::ProfileUpdated>(),
        EventSchema::of::<v3::ProfileUpdated>(),
    );
    for (from, to) in [(&s1, &s2), (&s2, &s3)] {
        let mut only_from = SchemaRegistry::new();
        only_from.register(from.clone())?;
        let report = only_from.check_compatibility(to);
        println!(
            "\n{} → {}: {} under {}",
            from.version,
            to.version,
            if report.is_compatible() { "compatible" } else { "breaking" },
            report.mode
        );
        for d in &report.differences {
            println!("  - {d}");
        }
    }

    // 3. The migration plans, and the SQL for the automatic one.
    let plan = registry.generate_migration(&s1, &s2)?;
    println!("\nplan:\n{plan}");
    println!("PostgreSQL:\n{}", plan.to_sql(SqlDialect::Postgres)?);
    println!("SQLite:\n{}", plan.to_sql(SqlDialect::Sqlite)?);
    let plan = registry.generate_migration(&s2, &s3)?;
    println!("plan:\n{plan}");
    match plan.to_sql(SqlDialect::Postgres) {
        Ok(sql) => println!("{sql}"),
        Err(e) => println!("no SQL for this one: {e}\n"),
    }

    // 4. Every old event reads back as v3, through the chain.
    for stored in store.query().fetch().await? {
        let version = stored.event.version.clone();
        let current: Envelope<v3::ProfileUpdated> = stored.into_typed()?;
        println!(
            "stored as {} → read as {}: user_number={} name={} locale={:?}",
            version.as_deref().unwrap_or("?"),
            current.version.as_deref().unwrap_or("?"),
            current.data.user_number,
            current.data.name,
            current.data.locale
        );
    }
    Ok(())
}
