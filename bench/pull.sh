#!/usr/bin/env bash
# Pull throughput of one 1 GiB image (SIZE_MIB to change) through each of the hub's APIs, side
# by side in one hyperfine run, against nginx serving the same file from
# the storage folder (sendfile):
#   nginx     GET /images/sha256/<hex>.sif straight from the storage folder
#   download  GET /download/sha256/<hex>
#   library   libclient pull bench/analysis/analysis:big (the client package
#             apptainer uses for library://: /version, then /v1/imagefile/…)
#   shub      the `image` URL of /api/container/bench/analysis:big
#   oci       GET /v2/bench/analysis/analysis/blobs/sha256:<hex>
# (an API the hub does not answer is left out, and said so).
# Prints hyperfine's table (A vs the others) and one MB/s line per API.
# Release build; SQLite and a local storage folder (the default hub).
# Needs: hyperfine, nginx-light, curl, python3 (install-deps.sh bench) and
# the libclient oracle (../shared/oracles/build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sifhub/target}
runs=${RUNS:-5}
size_mib=${SIZE_MIB:-1024}

bash scripts/install-deps.sh bench
cargo build --release --quiet --bin sifhub -p sifhub --example bench_seed
bin=$CARGO_TARGET_DIR/release/sifhub
seed=$CARGO_TARGET_DIR/release/examples/bench_seed
oracles=${SIFHUB_ORACLES:-$HOME/.cache/sifhub-oracles}
if [[ ! -x $oracles/libclient ]]; then
  oracles=$(bash "${SIFHUB_SHARED:-../shared}/oracles/build.sh" "$oracles")
fi
libclient=$oracles/libclient

work=$(mktemp -d /var/tmp/sifhub-bench-pull.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 100); do curl -fs -o /dev/null "$1" && return; sleep 0.1; done; echo "not up: $1" >&2; exit 1; }
answers() { [[ $(curl -s -o /dev/null -w '%{http_code}' "$1") == 200 ]]; }

port=$(free_port)
hub=http://127.0.0.1:$port
export SIFHUB_DATA_DIR=$work/data SIFHUB_LISTEN=127.0.0.1:$port SIFHUB_WORKER_SLOTS=0 SIFHUB_LOG=warn
mkdir -p "$SIFHUB_DATA_DIR"
head -c $((size_mib * 1048576)) /dev/urandom >"$work/big.sif"
hex=$("$seed" "$work/big.sif" bench/analysis analysis big)
rm "$work/big.sif"
"$bin" serve >"$work/serve.log" 2>&1 &
pids+=($!)
wait_http "$hub/readyz"

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
nginx_url=http://127.0.0.1:$nginx_port/images/sha256/$hex.sif
wait_http "$nginx_url"

# name|command|URL for the MB/s line (empty: timed from hyperfine alone)
apis=("nginx|curl -s -o /dev/null $nginx_url|$nginx_url"
      "download|curl -s -o /dev/null $hub/download/sha256/$hex|$hub/download/sha256/$hex"
      "library|$libclient $hub pull bench/analysis/analysis:big /dev/null|")
shub_json=$(curl -s "$hub/api/container/bench/analysis:big" || true)
shub_url=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("image", ""))' "$shub_json" 2>/dev/null || true)
if [[ -n $shub_url ]] && answers "$shub_url"; then
  apis+=("shub|curl -sL -o /dev/null $shub_url|$shub_url")
else
  echo "(shub: $hub/api/container/bench/analysis:big gives no image URL: not measured)"
fi
oci_url=$hub/v2/bench/analysis/analysis/blobs/sha256:$hex
if answers "$oci_url"; then
  apis+=("oci|curl -sL -o /dev/null $oci_url|$oci_url")
else
  echo "(oci: $oci_url does not answer 200: not measured)"
fi

# Every API must serve the same bytes before it is timed.
"$libclient" "$hub" pull bench/analysis/analysis:big "$work/check.sif" >/dev/null
[[ $(sha256sum <"$work/check.sif" | cut -c1-64) == "$hex" ]] || { echo "library pull gave other bytes" >&2; exit 1; }
rm "$work/check.sif"
args=(--style basic --runs "$runs" --warmup 1 --export-json "$work/pull.json")
names=()
for api in "${apis[@]}"; do
  IFS='|' read -r name command url <<<"$api"
  if [[ -n $url ]]; then
    [[ $(curl -sL "$url" | sha256sum | cut -c1-64) == "$hex" ]] || { echo "$name served other bytes" >&2; exit 1; }
  fi
  args+=(-n "$name" "$command")
  names+=("$name")
done

echo "== pull $size_mib MiB over loopback through each API vs nginx on the same file ($runs runs each)"
hyperfine "${args[@]}" >/dev/null
python3 - "$work/pull.json" "$size_mib" "${names[@]}" <<'PY'
import json, statistics, sys
results = json.load(open(sys.argv[1]))["results"]
size = int(sys.argv[2]) * 1048576
names = sys.argv[3:]
base = statistics.median(results[names.index("nginx")]["times"])
for name, r in zip(names, results):
    median = statistics.median(r["times"])
    print(f"{name:>9}: median {median:.3f} s (min {min(r['times']):.3f}, max {max(r['times']):.3f}), "
          f"{size / median / 1e6:.0f} MB/s, {median / base:.2f}x nginx's time")
PY
