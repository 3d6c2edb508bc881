#!/usr/bin/env bash
# Builds the OCI image layouts that the registry tests push into a local
# Docker registry (tests/src/registry.rs runs this script once per test run).
#
# Output (cached, rebuilt only when SEED_VERSION changes or it is missing):
#   ${SIFHUB_FIXTURES:-$HOME/.cache/sifhub-fixtures}/
#     debian-bookworm-minbase/   debootstrap --variant=minbase rootfs (slow: ~1-2 min, done once)
#     oci/                       an OCI image layout with these tags:
#       busybox-amd64   busybox-static rootfs (/bin/busybox + applet symlinks),
#                       linux/amd64, with Env/Cmd/WorkingDir/labels set
#       busybox-arm64   the same rootfs marked arm64 (/etc/sifhub-arch says so)
#       busybox         an OCI image index over the two above (arm64 listed first)
#       debian          the Debian bookworm minbase rootfs as one layer
#     oci.seeded         the SEED_VERSION the layout was built with
#
# Needs (Debian packages): umoci, jq, debootstrap, busybox-static, coreutils.
# Runs as root (debootstrap and faithful ownership need it). Idempotent and
# safe to run concurrently (flock).
set -euo pipefail

SEED_VERSION=1
FIXTURES=${SIFHUB_FIXTURES:-$HOME/.cache/sifhub-fixtures}
LAYOUT=$FIXTURES/oci
DEBIAN_ROOT=$FIXTURES/debian-bookworm-minbase

need() {
    command -v "$1" >/dev/null 2>&1 || {
        echo "seed.sh: $1 not found: install the Debian package $2" >&2
        exit 1
    }
}
need umoci umoci
need jq jq
need debootstrap debootstrap
need sha256sum coreutils
need flock util-linux
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] || { echo "seed.sh: $BUSYBOX not found: install the Debian package busybox-static" >&2; exit 1; }

mkdir -p "$FIXTURES"
exec 9>"$FIXTURES/.seed.lock"
flock 9

if [ -d "$LAYOUT" ] && [ "$(cat "$FIXTURES/oci.seeded" 2>/dev/null || true)" = "$SEED_VERSION" ]; then
    echo "seed.sh: fixtures up to date in $FIXTURES"
    exit 0
fi

log() { echo "seed.sh: $*" >&2; }

# The Debian mirror: deb.debian.org, or the first one in the machine's apt sources.
debian_mirror() {
    local m
    m=$(grep -hoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -n1 | tr -d ' ' || true)
    if [ -z "$m" ]; then
        m=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
    fi
    echo "${m:-http://deb.debian.org/debian}"
}

# 1. Debian bookworm minbase (cached on its own: it is the slow part).
if [ ! -f "$DEBIAN_ROOT.done" ]; then
    rm -rf "$DEBIAN_ROOT"
    mirror=http://deb.debian.org/debian
    log "debootstrap --variant=minbase bookworm from $mirror"
    if ! debootstrap --variant=minbase bookworm "$DEBIAN_ROOT" "$mirror" >"$FIXTURES/debootstrap.log" 2>&1; then
        rm -rf "$DEBIAN_ROOT"
        mirror=$(debian_mirror)
        log "retrying debootstrap with $mirror"
        debootstrap --variant=minbase bookworm "$DEBIAN_ROOT" "$mirror" >"$FIXTURES/debootstrap.log" 2>&1 || {
            tail -n 20 "$FIXTURES/debootstrap.log" >&2
            exit 1
        }
    fi
    # Keep the image small: no downloaded packages or package lists.
    find "$DEBIAN_ROOT/var/cache/apt/archives" -name '*.deb' -delete
    find "$DEBIAN_ROOT/var/lib/apt/lists" -maxdepth 1 -type f ! -name lock -delete
    touch "$DEBIAN_ROOT.done"
fi

WORK=$(mktemp -d "$FIXTURES/seed.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
L=$WORK/oci
umoci init --layout "$L"

busybox_rootfs() { # ARCH DIR
    local arch=$1 dir=$2 applet
    mkdir -p "$dir/bin" "$dir/etc" "$dir/root" "$dir/tmp"
    cp "$BUSYBOX" "$dir/bin/busybox"
    chmod 0755 "$dir/bin/busybox"
    for applet in $("$BUSYBOX" --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$dir/bin/$applet"
    done
    echo "$arch" >"$dir/etc/sifhub-arch"
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$dir/etc/passwd"
    printf 'root:x:0:\n' >"$dir/etc/group"
    chmod 0700 "$dir/root"
    chmod 1777 "$dir/tmp"
}

# new_image TAG ROOTFS-SOURCE: an image with one layer holding ROOTFS-SOURCE.
new_image() {
    local tag=$1 src=$2 bundle=$WORK/bundle-$1
    umoci new --image "$L:$tag"
    umoci unpack --image "$L:$tag" "$bundle" >/dev/null
    cp -a "$src/." "$bundle/rootfs/"
    umoci repack --image "$L:$tag" "$bundle" >/dev/null
    rm -rf "$bundle"
}

for arch in amd64 arm64; do
    log "busybox image for $arch"
    busybox_rootfs "$arch" "$WORK/busybox-$arch"
    new_image "busybox-$arch" "$WORK/busybox-$arch"
    umoci config --image "$L:busybox-$arch" --no-history \
        --os linux --architecture "$arch" \
        --config.env 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --config.env 'GREETING=hello "world" $HOME' \
        --config.cmd sh \
        --config.workingdir /tmp \
        --config.label org.sifhub.test=busybox \
        --config.label "org.sifhub.arch=$arch"
done

log "debian image"
new_image debian "$DEBIAN_ROOT"
umoci config --image "$L:debian" --no-history --os linux --architecture amd64 \
    --config.env 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --config.cmd bash

# The multi-arch index: arm64 first, so a resolver that takes the first entry fails.
descriptor() { # TAG ARCH
    jq -c --arg t "$1" --arg a "$2" \
        '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t)
         | del(.annotations) | .platform = {architecture: $a, os: "linux"}' "$L/index.json"
}
arm=$(descriptor busybox-arm64 arm64)
amd=$(descriptor busybox-amd64 amd64)
jq -nc --argjson a "$arm" --argjson b "$amd" \
    '{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: [$a, $b]}' \
    >"$WORK/index-blob.json"
printf '%s' "$(cat "$WORK/index-blob.json")" >"$WORK/index-blob"
idx_hex=$(sha256sum "$WORK/index-blob" | cut -d' ' -f1)
idx_size=$(stat -c %s "$WORK/index-blob")
mv "$WORK/index-blob" "$L/blobs/sha256/$idx_hex"
jq -c --arg d "sha256:$idx_hex" --argjson s "$idx_size" \
    '.manifests += [{mediaType: "application/vnd.oci.image.index.v1+json", digest: $d, size: $s,
       annotations: {"org.opencontainers.image.ref.name": "busybox"}}]' \
    "$L/index.json" >"$WORK/index.json"
mv "$WORK/index.json" "$L/index.json"

umoci gc --layout "$L"

rm -rf "$LAYOUT"
mv "$L" "$LAYOUT"
echo "$SEED_VERSION" >"$FIXTURES/oci.seeded"
log "fixtures ready in $FIXTURES"
