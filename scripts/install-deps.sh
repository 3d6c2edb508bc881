#!/usr/bin/env bash
# Installs the Debian packages a sifhub role needs, only those missing.
#   scripts/install-deps.sh serve   what `sifhub serve` and its builder use
#   scripts/install-deps.sh test    that, plus everything the test suite uses
#   scripts/install-deps.sh bench   that, plus the tools bench/ compares against
set -euo pipefail
role=${1:?usage: install-deps.sh serve|test|bench}

# The builder shells out to these at build time.
serve_pkgs=(ca-certificates squashfs-tools slirp4netns)
# Real components the tests run against (see ARCHITECTURE.md, "Testing").
test_pkgs=(python3 python3-venv git siftool golang-go golang-github-apptainer-container-library-client-dev
  docker-registry skopeo umoci busybox-static debootstrap apache2-utils jq postgresql sqlite3 curl openssl
  chromium chromium-driver)
# What the benchmarks time, and the standard tools they compare with.
bench_pkgs=(hyperfine wrk nginx-light)

case $role in
  serve) want=("${serve_pkgs[@]}") ;;
  test) want=("${serve_pkgs[@]}" "${test_pkgs[@]}") ;;
  bench) want=("${serve_pkgs[@]}" "${test_pkgs[@]}" "${bench_pkgs[@]}") ;;
  *) echo "install-deps.sh: unknown role $role (expected serve, test or bench)" >&2; exit 2 ;;
esac

missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "missing Debian packages: ${missing[*]} (run as root, or apt-get install them)" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "cargo not found: install a Rust toolchain (rustup, Rust >= 1.94)" >&2
  exit 1
fi

# The storage tests' S3-compatible server, a crates.io binary: built once
# into a cache CI keeps (0.14.1 is the newest that builds with Rust 1.95).
if [[ $role == test ]]; then
  tools="${HOME}/.cache/sifhub/tools"
  if [[ ! -x $tools/bin/s3s-fs ]]; then
    echo "installing s3s-fs into $tools"
    cargo install --quiet --root "$tools" --locked s3s-fs@0.14.1 --features binary
  fi
  # The feed tests read the Atom feeds with a reader nobody here wrote.
  if [[ ! -x $tools/py/bin/python ]] || ! "$tools/py/bin/python" -c 'import feedparser' 2>/dev/null; then
    echo "installing feedparser into $tools/py"
    python3 -m venv "$tools/py"
    "$tools/py/bin/pip" install --quiet feedparser
  fi
fi
