#!/usr/bin/env bash
# Runs the crash test of the durable outbox with 200 kills per store (SQLite and
# PostgreSQL) instead of the 20 of `cargo test`; see tests/crash.rs. PostgreSQL must be
# up (127.0.0.1:5432, database `test`, or BAE_POSTGRES_URL). Extra arguments go to the
# test binary, e.g. `scripts/crash-test.sh sqlite` for SQLite alone.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

export BAE_CRASH_KILLS="${BAE_CRASH_KILLS:-200}"
exec cargo test --all-features --test crash -- --nocapture "$@"
