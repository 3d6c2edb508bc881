#!/usr/bin/env bash
# The catalog under load of data: seeds 100,000 images across 5,000
# collections (hub/examples/catalog_seed.rs) into SQLite and into a
# throwaway PostgreSQL cluster, starts a release `sifhub serve` on each and
# times sequential requests (one keep-alive connection, after a warm-up)
# to: the catalog's first page, a search, page 200 (by name and by recent
# builds), the downloads order and a container page. Prints p50/p95 per
# request as the server logged it (the request-log middleware's time,
# handler to response head) and as the client saw it.
# Release build. Needs: postgresql (server), curl, python3.
#   COLLECTIONS=5000 REQUESTS=300 bash bench/catalog.sh
# CARGO may name a cargo wrapper (e.g. one serializing builds).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sifhub/target}
cargo=${CARGO:-cargo}
collections=${COLLECTIONS:-5000}
requests=${REQUESTS:-300}

"$cargo" build --release --quiet --bin sifhub -p sifhub --example catalog_seed
bin=$CARGO_TARGET_DIR/release/sifhub
seed=$CARGO_TARGET_DIR/release/examples/catalog_seed
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[[ -x $pg_bin/initdb ]] || { echo "PostgreSQL server not found: install the Debian package postgresql" >&2; exit 1; }

work=$(mktemp -d /var/tmp/sifhub-bench-catalog.XXXXXX)
# The cluster's folder belongs to postgres (initdb refuses root).
pg_dir=$(mktemp -d /var/tmp/sifhub-bench-pg.XXXXXX)
as_postgres=()
[[ $(id -u) == 0 ]] && { chown postgres: "$pg_dir"; as_postgres=(runuser -u postgres --); }
server=
cleanup() {
  [[ -n $server ]] && kill "$server" 2>/dev/null || true
  "${as_postgres[@]}" "$pg_bin/pg_ctl" stop -D "$pg_dir/data" -m immediate >/dev/null 2>&1 || true
  rm -rf "$work" "$pg_dir"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 200); do curl -fs "$1" >/dev/null && return; sleep 0.1; done; echo "not up: $1" >&2; exit 1; }

# measure LABEL DATABASE_URL
measure() {
  local label=$1 data=$work/$1
  mkdir -p "$data"
  export SIFHUB_DATA_DIR=$data SIFHUB_DATABASE_URL=$2 SIFHUB_WORKER_SLOTS=0
  echo "== $label: seeding $collections collections"
  "$seed" "$collections"
  local port
  port=$(free_port)
  SIFHUB_LISTEN=127.0.0.1:$port SIFHUB_LOG=info "$bin" serve >"$data/serve.log" 2>&1 &
  server=$!
  wait_http "http://127.0.0.1:$port/readyz"
  python3 - "$label" "http://127.0.0.1:$port" "$data/serve.log" "$requests" "$collections" <<'PY'
import http.client, re, statistics, sys, time, urllib.parse
label, base, log_path, n, collections = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
# (name, path, text the page must show)
cases = [
    ("catalog first page", "/", "1–20 of 5,000 collections"),
    ("search 'salmon'", "/?q=salmon", "<tbody>"),
    ("search 'lab-123/'", "/?q=lab-123%2F", "1–10 of 10 collections"),
    ("page 200 by name", "/?page=200", "3,981–4,000 of"),
    ("page 200 by recent builds", "/?sort=updated&page=200", "3,981–4,000 of"),
    ("first page by downloads", "/?sort=downloads", "<tbody>"),
    ("container page", "/lab-123/assembly/tools", "tools:latest"),
]
url = urllib.parse.urlsplit(base)
conn = http.client.HTTPConnection(url.hostname, url.port)
def get(path):
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        sys.exit(f"{path}: {response.status}\n{body[:500]!r}")
    return body
sent, client = [], {}
for name, path, expected in cases:
    body = get(path).decode()
    # The expected texts are those of the default 5,000 collections.
    if collections == 5000 and expected not in body:
        sys.exit(f"{name}: {expected!r} not on the page\n{body[-3000:]}")
    for _ in range(20):
        get(path)
    sent += [path] * 21
    times = []
    for _ in range(n):
        started = time.perf_counter()
        get(path)
        times.append((time.perf_counter() - started) * 1000)
        sent.append(path)
    client[name] = times
time.sleep(0.5)
ansi = re.compile(r"\x1b\[[0-9;]*m")
logged = []
for line in open(log_path, encoding="utf-8", errors="replace"):
    m = re.search(r"\bGET (\S+) (\d{3}) ([\d.]+) ms", ansi.sub("", line))
    if m and m.group(1) != "/readyz":
        logged.append((m.group(1), float(m.group(3))))
if len(logged) != len(sent) or any(p != urllib.parse.urlsplit(s).path for (p, _), s in zip(logged, sent)):
    sys.exit(f"request log does not line up: {len(logged)} logged, {len(sent)} sent")
def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]
print(f"{label}: {n} sequential requests each after 20 warm-up; milliseconds")
print(f"  {'request':28} {'server p50':>10} {'server p95':>10} {'client p50':>10} {'client p95':>10}")
at = 0
for name, path, _ in cases:
    at += 21
    server = [ms for _, ms in logged[at:at + n]]
    at += n
    times = client[name]
    print(f"  {name:28} {pct(server, .5):10.2f} {pct(server, .95):10.2f} {pct(times, .5):10.2f} {pct(times, .95):10.2f}")
PY
  kill "$server"
  wait "$server" 2>/dev/null || true
  server=
}

measure sqlite "sqlite://$work/sqlite/sifhub.db"

pg_port=$(free_port)
"${as_postgres[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust -E UTF8 --locale=C --no-sync >/dev/null
# Durability does not matter to a throwaway cluster; seeding speed does.
"${as_postgres[@]}" "$pg_bin/pg_ctl" start -D "$pg_dir/data" -w -l "$pg_dir/server.log" \
  -o "-k $pg_dir -p $pg_port -c listen_addresses='' -c fsync=off -c synchronous_commit=off" >/dev/null
"${as_postgres[@]}" "$pg_bin/psql" -h "$pg_dir" -p "$pg_port" -U postgres -q -c "CREATE DATABASE catalog"
measure postgres "postgres://postgres@localhost:$pg_port/catalog?host=$pg_dir"
