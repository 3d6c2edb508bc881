#!/usr/bin/env bash
# Times the builder's two heavy steps side by side with the standard tools,
# in one run, and prints the median times and their ratio (A = sifhub):
#   1. pull + unpack the Debian bookworm minbase image from a local
#      docker-registry, cold cache   vs  skopeo copy + umoci unpack
#   2. squash that root (gzip)       vs  bare mksquashfs, same options
# Needs: hyperfine, docker-registry, skopeo, umoci, squashfs-tools (and the
# fixtures of tests/registry/seed.sh, which it builds when missing). As root.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sifhub/target}
runs=${RUNS:-5}
source bench/lib.sh

bash scripts/install-deps.sh bench
bash tests/registry/seed.sh >/dev/null
fixtures=${SIFHUB_FIXTURES:-$HOME/.cache/sifhub-fixtures}
cargo build --release --quiet -p sifhub-builder --example bench_steps
bin=$CARGO_TARGET_DIR/release/examples/bench_steps

work=$(mktemp -d /var/tmp/sifhub-bench.XXXXXX)
cleanup() { [[ -n ${registry_pid:-} ]] && kill "$registry_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/registry.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
YML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.2; done
skopeo copy --quiet --dest-tls-verify=false "oci:$fixtures/oci:debian" "docker://127.0.0.1:$port/debian:bookworm"
ref=127.0.0.1:$port/debian:bookworm

compare "pull + unpack $ref, cold cache: sifhub vs skopeo copy + umoci unpack" "$runs" \
  "sh -c 'rm -rf $work/a && $bin pull-unpack $ref $work/a/root $work/a/cache 2>/dev/null'" \
  "sh -c 'rm -rf $work/b && mkdir -p $work/b && skopeo copy --quiet --src-tls-verify=false docker://$ref oci:$work/b/layout:x && umoci unpack --image $work/b/layout:x $work/b/bundle >/dev/null'"

rm -rf "$work/a" && "$bin" pull-unpack "$ref" "$work/root" "$work/cache" 2>/dev/null
compare "squash the same root, gzip: sifhub vs mksquashfs" "$runs" \
  "$bin squash $work/root $work/a.sqfs" \
  "mksquashfs $work/root $work/b.sqfs -noappend -comp gzip -quiet"
