#!/usr/bin/env bash
# Starts a hub on this machine: installs the system packages it needs when
# they are missing, builds sifhub, then runs `sifhub serve` on SQLite and a
# local storage folder (./sifhub-data). Arguments go to `sifhub serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sifhub/target}
scripts/install-deps.sh serve
cargo build --release --locked --bin sifhub
exec "$CARGO_TARGET_DIR/release/sifhub" serve "$@"
