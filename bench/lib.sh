# Shared by the bench/ scripts: side-by-side timing with hyperfine (Debian
# package `hyperfine`), printing each command's median wall time and the
# ratio A/B (below 1: A, sifhub, is faster).

# compare LABEL RUNS 'COMMAND A (sifhub)' 'COMMAND B (standard tool)' [PREPARE]
# PREPARE runs before every timed run of both (e.g. to empty a cache).
compare() {
  local label=$1 runs=$2 a=$3 b=$4 prepare=${5:-}
  local json
  json=$(mktemp)
  local args=(--style basic --runs "$runs" --warmup 1 --export-json "$json")
  [[ -n $prepare ]] && args+=(--prepare "$prepare")
  hyperfine "${args[@]}" -n sifhub "$a" -n standard "$b" >/dev/null
  python3 - "$label" "$json" <<'PY'
import json, statistics, sys
label, path = sys.argv[1], sys.argv[2]
results = json.load(open(path))["results"]
a, b = (r["times"] for r in results)
ma, mb = statistics.median(a), statistics.median(b)
print(f"{label}: sifhub median {ma:.3f} s (min {min(a):.3f}, max {max(a):.3f}); "
      f"standard median {mb:.3f} s (min {min(b):.3f}, max {max(b):.3f}); ratio A/B {ma/mb:.2f}")
PY
  rm -f "$json"
}
