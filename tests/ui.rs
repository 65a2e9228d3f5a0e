//! Compile-time diagnostics of `#[derive(Event)]` and `#[handler]`: the cases under
//! `ui-tests/{event,handler}/{fail,pass}/`, run with trybuild.
//!
//! The `.stderr` files hold rustc's exact output, which changes between compiler
//! releases, so the cases run only on the toolchain they were blessed on (see
//! `ui-tests/README.md`); on any other compiler the test prints why and passes.

use std::io::Write;
use std::process::Command;

/// The compiler release the `.stderr` files were blessed on.
const BLESSED_ON: &str = "1.95";

/// `Some(version)` of the compiler cargo uses, e.g. `"1.95.0"`.
fn rustc_version() -> Option<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(rustc).arg("--version").output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    text.split_whitespace().nth(1).map(str::to_owned)
}

fn blessed_toolchain(version: &str) -> bool {
    version == BLESSED_ON || version.strip_prefix(BLESSED_ON).is_some_and(|rest| rest.starts_with('.'))
}

#[test]
fn ui() {
    let version = rustc_version();
    if !version.as_deref().is_some_and(blessed_toolchain) {
        // Straight to stderr, past libtest's output capture, so the skip is seen.
        let _ = writeln!(
            std::io::stderr(),
            "note: skipping the ui-tests: they were blessed on rustc {BLESSED_ON}, this is rustc {}; \
             compiler messages differ between releases (see ui-tests/README.md)",
            version.as_deref().unwrap_or("of unknown version"),
        );
        return;
    }
    // The snapshot cases compare their structs with `ui-tests/events.lock/`; the derive
    // reads the directory from this variable while trybuild compiles the cases.
    let lock_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui-tests/events.lock");
    // SAFETY: set before trybuild starts any thread, and no other thread of this test
    // binary reads the environment (this is its only test).
    unsafe { std::env::set_var("BAE_EVENTS_LOCK_DIR", &lock_dir) };
    // SAFETY: as above; update mode must not rewrite the snapshots the cases check.
    unsafe { std::env::remove_var("BAE_EVENTS_LOCK") };
    let t = trybuild::TestCases::new();
    t.compile_fail("ui-tests/*/fail/*.rs");
    t.pass("ui-tests/*/pass/*.rs");
}
