//! The built-in authentication events (`better_auth_events::auth`) are locked here, in
//! `auth.lock/`, as a user's events are in their `events.lock/`: a change to one of them
//! without a new version fails this test. `BAE_EVENTS_LOCK=update cargo test --test
//! built_in_snapshots` records them after an intended change.

use better_auth_events::schema::check_built_in_snapshots;

#[test]
fn the_built_in_events_match_their_snapshots() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/auth.lock");
    let update = better_auth_events_lock::update_mode();
    let report = check_built_in_snapshots(dir, update).unwrap_or_else(|e| panic!("{e}"));
    assert!(!report.no_directory, "{dir} is missing");
    if !update {
        assert!(report.missing.is_empty(), "not recorded in auth.lock/: {:?}", report.missing);
        assert!(report.checked.iter().any(|id| id == "session.expired@1.0.0"), "{:?}", report.checked);
    }
}
