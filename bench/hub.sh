#!/usr/bin/env bash
# The hub's request paths, measured side by side in one run:
#   1. webhook acknowledgement: wrk on loopback posting signed push
#      deliveries (each a new X-GitHub-Delivery, each queueing a build that
#      supersedes the previous one) to a plain-mode repository; prints
#      p50/p99 latency and requests/s.
#   2. downloads: a 1 GiB image from /download/sha256/<hex> vs nginx serving
#      the same file from the storage folder, curl to /dev/null; prints the
#      median times, throughputs and their ratio (A = sifhub).
# Release build; SQLite and a local storage folder (the default hub).
# Needs: hyperfine, wrk, nginx-light, curl, openssl, python3 (install-deps.sh bench).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sifhub/target}
runs=${RUNS:-5}
duration=${DURATION:-20s}
connections=${CONNECTIONS:-16}
source bench/lib.sh

bash scripts/install-deps.sh bench
cargo build --release --quiet --bin sifhub -p sifhub --example bench_seed
bin=$CARGO_TARGET_DIR/release/sifhub
seed=$CARGO_TARGET_DIR/release/examples/bench_seed

work=$(mktemp -d /var/tmp/sifhub-bench-hub.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 100); do curl -fs "$1" >/dev/null && return; sleep 0.1; done; echo "not up: $1" >&2; exit 1; }

# GitHub's tree listing for the repository's first delivery: one recipe.
gh_port=$(free_port)
python3 - "$gh_port" >"$work/github.log" 2>&1 <<'PY' &
import http.server, json, sys
class Tree(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"sha": "x", "tree": [{"path": "Singularity", "type": "blob", "mode": "100644"}], "truncated": False}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *args): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Tree).serve_forever()
PY
pids+=($!)

port=$(free_port)
export SIFHUB_DATA_DIR=$work/data SIFHUB_LISTEN=127.0.0.1:$port SIFHUB_WORKER_SLOTS=0 \
  SIFHUB_LOG=warn SIFHUB_GITHUB_API_URL=http://127.0.0.1:$gh_port \
  SIFHUB_DOWNLOAD_RATE_PER_MINUTE=0  # throughput, not the rate limit, is measured
mkdir -p "$SIFHUB_DATA_DIR"
secret=$("$bin" admin repo add bench/analysis --branch main | awk '$1 == "Secret:" {print $2}')
"$bin" serve >"$work/serve.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$port/readyz"
hook=http://127.0.0.1:$port/webhooks/github/bench/analysis

python3 - "$work/push.json" <<'PY'
import json, sys
sha = "a" * 40
commit = {"id": sha, "message": "recipe", "added": [], "removed": [], "modified": ["Singularity"],
          "timestamp": "2026-11-27T12:00:00Z", "author": {"name": "b", "email": "b@example.org"}}
push = {"ref": "refs/heads/main", "before": "b" * 40, "after": sha, "created": False, "deleted": False,
        "forced": False, "commits": [commit], "head_commit": commit,
        "repository": {"id": 1, "name": "analysis", "full_name": "bench/analysis", "private": False,
                       "default_branch": "main", "owner": {"login": "bench", "id": 2}},
        "sender": {"login": "bench", "id": 2}}
open(sys.argv[1], "w").write(json.dumps(push))
PY
sig=$(openssl dgst -sha256 -hmac "$secret" -hex <"$work/push.json" | awk '{print $NF}')
deliver() {
  curl -s -X POST "$hook" -H 'Content-Type: application/json' -H 'X-GitHub-Event: push' \
    -H "X-GitHub-Delivery: warmup-$1" -H "X-Hub-Signature-256: sha256=$sig" --data-binary @"$work/push.json"
}
# The first delivery lists the tree (in the background); then pushes queue builds.
deliver 0 >/dev/null
for i in $(seq 1 100); do
  deliver "$i" | grep -q '"builds":\[{' && break
  [[ $i == 100 ]] && { echo "pushes never queued a build:" >&2; deliver x >&2; exit 1; }
  sleep 0.1
done

cat >"$work/push.lua" <<LUA
local body = io.open("$work/push.json"):read("*a")
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
end
local n = 0
function request()
  n = n + 1
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["X-GitHub-Event"] = "push",
    ["X-Hub-Signature-256"] = "sha256=$sig",
    ["X-GitHub-Delivery"] = string.format("bench-%d-%d", id, n),
  }, body)
end
function done(summary, latency, requests)
  io.write(string.format("webhook ack: %d requests in %.1f s, %.0f requests/s; latency p50 %.2f ms, p99 %.2f ms, max %.2f ms; errors: %d non-2xx, %d socket\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
LUA
echo "== webhook acknowledgement: wrk -t2 -c$connections -d$duration, signed pushes that each queue a build"
wrk -t2 -c"$connections" -d"$duration" -s "$work/push.lua" "$hook" | tail -1

echo "== download 1 GiB: sifhub /download vs nginx (sendfile) on the same file"
head -c 1073741824 /dev/urandom >"$work/big.sif"
hex=$("$seed" "$work/big.sif" bench/analysis analysis big)
rm "$work/big.sif"
nginx_port=$(free_port)
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<NGINX
daemon off;
user root;
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 64; }
http {
  access_log off;
  sendfile on;
  client_body_temp_path $work/nginx;
  proxy_temp_path $work/nginx;
  fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx;
  scgi_temp_path $work/nginx;
  server { listen 127.0.0.1:$nginx_port; root $SIFHUB_DATA_DIR/storage; }
}
NGINX
nginx -c "$work/nginx/nginx.conf" &
pids+=($!)
wait_http "http://127.0.0.1:$nginx_port/images/sha256/$hex.sif"
ours=http://127.0.0.1:$port/download/sha256/$hex
theirs=http://127.0.0.1:$nginx_port/images/sha256/$hex.sif
[[ $(curl -s "$ours" | sha256sum | cut -c1-64) == "$hex" ]] || { echo "sifhub served other bytes" >&2; exit 1; }
compare "download 1 GiB over loopback: sifhub vs nginx" "$runs" \
  "curl -s -o /dev/null $ours" "curl -s -o /dev/null $theirs"
for u in "$ours" "$theirs"; do
  printf '%s: %.0f MB/s (one more run)\n' "$u" "$(curl -s -o /dev/null -w '%{speed_download}' "$u" | awk '{print $1/1e6}')"
done
