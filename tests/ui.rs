//! Compile-time diagnostics of `#[derive(Event)]` and `#[handler]`: the cases under
//! `ui-tests/{event,handler}/{fail,pass}/`, run with trybuild.
//!
//! The `.stderr` files hold rustc's exact output, which changes between compiler
//! releases, so `rust-toolchain.toml` pins the compiler they were blessed on. On any
//! other compiler this test fails and says why; set `BAE_SKIP_UI=1` to skip it on
//! purpose (see `ui-tests/README.md`).

use std::io::Write;
use std::process::Command;

/// The compiler release the `.stderr` files were blessed on (`rust-toolchain.toml`).
const BLESSED_ON: &str = "1.95.0";

/// The environment variable that skips the cases on another compiler.
const SKIP_VAR: &str = "BAE_SKIP_UI";

/// The version of the compiler cargo uses, e.g. `"1.95.0"`.
fn rustc_version() -> Option<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(rustc).arg("--version").output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    text.split_whitespace().nth(1).map(str::to_owned)
}

#[test]
fn ui() {
    let version = rustc_version();
    if version.as_deref() != Some(BLESSED_ON) {
        let found = version.as_deref().unwrap_or("of unknown version");
        if std::env::var_os(SKIP_VAR).is_some_and(|v| v == "1") {
            // Straight to stderr, past libtest's output capture, so the skip is seen.
            let _ = writeln!(
                std::io::stderr(),
                "\n!!! {SKIP_VAR}=1: the ui-tests were NOT run: they were blessed on rustc {BLESSED_ON}, \
                 this is rustc {found}; no compile-time diagnostic was checked !!!\n",
            );
            return;
        }
        panic!(
            "the ui-tests were blessed on rustc {BLESSED_ON} (pinned in rust-toolchain.toml), \
             but this is rustc {found}: compiler messages differ between releases, so the \
             `.stderr` files cannot be compared. Run them with `cargo +{BLESSED_ON} test --test ui`, \
             or set {SKIP_VAR}=1 to skip them on purpose (see ui-tests/README.md)"
        );
    }
    // The snapshot cases compare their structs with `ui-tests/events.lock/`; the derive
    // reads the directory from this variable while trybuild compiles the cases.
    let lock_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui-tests/events.lock");
    // SAFETY: set before trybuild starts any thread, and no other thread of this test
    // binary reads the environment (this is its only test).
    unsafe { std::env::set_var("BAE_EVENTS_LOCK_DIR", &lock_dir) };
    // SAFETY: as above; in update mode the derive would skip the snapshot checks.
    unsafe { std::env::remove_var("BAE_EVENTS_LOCK") };
    let t = trybuild::TestCases::new();
    t.compile_fail("ui-tests/*/fail/*.rs");
    t.pass("ui-tests/*/pass/*.rs");
}
