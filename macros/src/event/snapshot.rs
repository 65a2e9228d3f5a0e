//! The compile-time check of `events.lock/<name>@<version>.json`: the struct's fields
//! against the snapshot of its version, or a new version's bump against the newest
//! earlier snapshot. The derive only reads snapshots; `check_snapshots` in the runtime
//! writes them (`BAE_EVENTS_LOCK=update cargo test`).
//!
//! The derive sees tokens, so it compares the token-level shape: each field's JSON key,
//! its type as written, and whether it may be absent. A change deeper down (inside a
//! nested type) is caught at run time by `check_snapshots`, which compares full JSON
//! Schemas.

use std::path::{Path, PathBuf};

use better_auth_events_lock::{self as lock, Bump, BumpTooSmall, FieldShape, Snapshot};

use super::ast::Container;

/// Checks `cont` against its snapshots. Returns the snapshot files read, which the
/// generated code includes so that cargo rebuilds when one changes.
///
/// Nothing is checked outside the package cargo builds on request (a dependency's
/// snapshots are its own business), in update mode (the snapshots are about to be
/// rewritten), or when the crate has no snapshot directory.
pub(crate) fn check(cont: &Container<'_>) -> syn::Result<Vec<PathBuf>> {
    if std::env::var_os("CARGO_PRIMARY_PACKAGE").is_none() || lock::update_mode() {
        return Ok(Vec::new());
    }
    let Some(dir) = dir() else { return Ok(Vec::new()) };
    let name = cont.name();
    let version = cont.version();
    let fields: Vec<FieldShape> = cont
        .serialized_fields()
        .map(|(f, key)| FieldShape::new(key, f.type_string(), f.optional(&cont.attrs)))
        .collect();
    let read = |path: &Path| Snapshot::read(path).map_err(|e| syn::Error::new(cont.ident.span(), e));

    let path = dir.join(lock::file_name(&name, &version));
    if path.is_file() {
        let Some(released) = read(&path)?.fields else { return Ok(vec![path]) };
        let changes = lock::diff(&released, &fields);
        if let Some(first) = changes.first() {
            let span = cont
                .serialized_fields()
                .find(|(_, key)| *key == first.key())
                .map_or_else(|| cont.version_span(), |(f, _)| f.span());
            return Err(syn::Error::new(
                span,
                format!(
                    "`{name}` {version} no longer matches its snapshot `events.lock/{}`: {}; a released version never \
                     changes, so bump the version (or, if {version} was never released, run `{}=update cargo test`)",
                    lock::file_name(&name, &version),
                    join(&changes),
                    lock::UPDATE_VAR,
                ),
            ));
        }
        return Ok(vec![path]);
    }

    // A new version: it must be newer than every released one, and its bump must be large
    // enough for the change since the newest earlier snapshot.
    let Ok(this) = semver::Version::parse(&version) else { return Ok(Vec::new()) };
    if let Some((newest, _)) = lock::versions_of(&dir, &name).pop()
        && newest > this
    {
        return Err(syn::Error::new(
            cont.version_span(),
            format!(
                "`{name}` is declared as {version}, but {newest} is released already (`events.lock/{}`); versions \
                 never go backwards: use a version after {newest}, such as {}",
                lock::file_name(&name, &newest.to_string()),
                Bump::Minor.apply(&newest),
            ),
        ));
    }
    let Some((previous, previous_path)) = lock::previous_of(&dir, &name, &this) else { return Ok(Vec::new()) };
    let Some(old) = read(&previous_path)?.fields else { return Ok(vec![previous_path]) };
    // A field renamed with `renamed_from` is read from old events by the generated
    // upcaster: one compatible change, not a removal and an addition.
    let renames: Vec<(String, String)> = cont
        .serialized_fields()
        .filter_map(|(f, key)| f.attrs.renamed_from.as_ref().map(|old| (key.to_string(), old.value())))
        .collect();
    let renames: Vec<(&str, &str)> = renames.iter().map(|(n, o)| (n.as_str(), o.as_str())).collect();
    let changes = lock::diff_renamed(&old, &fields, &renames);
    if cont.attrs.previous.is_none()
        && let Some(lock::ShapeChange::Renamed { from, to }) =
            changes.iter().find(|c| matches!(c, lock::ShapeChange::Renamed { .. }))
    {
        let span = cont
            .serialized_fields()
            .find(|(_, key)| key == to)
            .and_then(|(f, _)| f.attrs.renamed_from.as_ref().map(syn::LitStr::span))
            .unwrap_or_else(|| cont.version_span());
        return Err(syn::Error::new(
            span,
            format!(
                "`{name}` renames `{from}` to `{to}` since {previous}, but declares no `previous`: the upcaster that \
                 moves `{from}` to `{to}` in {previous} events is generated from it; add `previous = <the {previous} \
                 type>` to `#[event(..)]`"
            ),
        ));
    }
    // A new major version must say how the released one is read: stored events outlive
    // the code that wrote them.
    let new_major = !lock::same_major(&previous, &this);
    let dropped = cont
        .attrs
        .drop_versions_before
        .as_ref()
        .and_then(|lit| semver::Version::parse(&lit.value()).ok())
        .is_some_and(|first| previous < first);
    if new_major && cont.attrs.previous.is_none() && !dropped {
        return Err(syn::Error::new(
            cont.version_span(),
            format!(
                "`{name}` {version} is a new major version after {previous} (`events.lock/{}`), but says nothing \
                 about how stored {previous} events are read; add one of these to `#[event(..)]`:\n\
                 - `previous = <the {previous} type>`: a generated upcaster moves {previous} events to {version};\n\
                 - `previous = <the {previous} type>, upcast = \"manual\"`: you write the conversion \
                 (`impl Upcast<..> for ..`);\n\
                 - `drop_versions_before = \"{version}\"`: events before {version} are no longer read (reading one \
                 is an error)",
                lock::file_name(&name, &previous.to_string()),
            ),
        ));
    }
    if let Err(BumpTooSmall { actual, needed, smallest }) = Bump::check(&previous, &this, Bump::required_by(&changes)) {
        let why = if needed == Bump::Major {
            "breaks BACKWARD compatibility (a Rust struct is a closed content model)"
        } else {
            "is a compatible change"
        };
        return Err(syn::Error::new(
            cont.version_span(),
            format!(
                "`{name}` {previous} → {version} is a {actual} bump, but the change since `events.lock/{}` {why}: {}; \
                 use version {smallest} or later",
                lock::file_name(&name, &previous.to_string()),
                join(&changes),
            ),
        ));
    }
    Ok(vec![previous_path])
}

fn join(changes: &[lock::ShapeChange]) -> String {
    changes.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// The snapshot directory, if the crate has one.
fn dir() -> Option<PathBuf> {
    let dir = match std::env::var_os(lock::DIR_VAR) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?).join(lock::DIR_NAME),
    };
    if dir.is_dir() {
        return Some(dir);
    }
    note_missing(&dir);
    None
}

/// Prints, once per compilation, how to start using snapshots. A proc macro cannot emit a
/// warning on stable Rust; cargo shows what the compiler prints that is not a diagnostic.
fn note_missing(dir: &Path) {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let own = std::env::var("CARGO_PKG_NAME").is_ok_and(|p| p == "better-auth-events");
    let off = std::env::var(lock::UPDATE_VAR).is_ok_and(|v| v == "off");
    if own || off || SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "note: better-auth-events: no {} directory, so event schemas are not checked at \
             compile time; run `{}=update cargo test` once to create it with a snapshot \
             of every event, then commit it (`{}=off` silences this note)",
            dir.display(),
            lock::UPDATE_VAR,
            lock::UPDATE_VAR,
        );
    }
}
