#!/usr/bin/env bash
# Runs all of sifhub's checks and tests: installs what they need on Debian 12
# (as root), then format, lints, and every test against real components.
# Exits non-zero when anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
# Outside the clone, so a fresh clone reuses the last build.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sifhub/target}
export SIFHUB_SHARED=${SIFHUB_SHARED:-$(cd .. && pwd)/shared}
export CARGO_TERM_COLOR=never

step() { printf '\n== %s\n' "$*"; }

step "system packages"
scripts/install-deps.sh test

step "reference oracles (siftool, libclient)"
SIFHUB_ORACLES=$(bash "$SIFHUB_SHARED/oracles/build.sh" | tail -n 1)
export SIFHUB_ORACLES

step "test fixtures (busybox and Debian images for the local registry)"
bash tests/registry/seed.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build"
cargo build --workspace --bins --locked

step "doc tests"
cargo test --workspace --doc --locked

# Last, so the runner's summary closes the output.
step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
