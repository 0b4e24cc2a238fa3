#!/usr/bin/env bash
# Build the tiny FROM-scratch test images used by the integration tests.
#
#   build.sh [--force] [IMAGE...]
#
# IMAGE is any of: http-agent crasher never-healthy memory-hog stream-agent (default: all),
# tagged deploy-test/<IMAGE>:latest.  No registry is needed: every image is
# FROM scratch + the host's static busybox (Debian package busybox-static,
# /bin/busybox; run scripts/ensure_docker.sh first) + the scripts in
# <IMAGE>/rootfs and common/rootfs.  The build context is assembled in a temp
# dir (busybox + applet symlinks + scripts, ~2 MB) and has no RUN steps, so the
# build starts no containers and needs no network.
#
# An image is skipped when it already exists and was built from the same
# sources (label deploy-test.context-hash); --force rebuilds regardless.
#
# Env: BUSYBOX (static busybox binary, default /bin/busybox),
#      IMAGE_PREFIX (default deploy-test).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ALL_IMAGES=(http-agent crasher never-healthy memory-hog stream-agent)
PREFIX="${IMAGE_PREFIX:-deploy-test}"
BUSYBOX="${BUSYBOX:-/bin/busybox}"
HASH_LABEL="deploy-test.context-hash"

say() { echo "build.sh: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

force=0
images=()
for arg in "$@"; do
    case "$arg" in
        --force | -f) force=1 ;;
        -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        -*) die "unknown option $arg" ;;
        *)
            [ -f "$HERE/$arg/Dockerfile" ] || die "unknown image '$arg' (known: ${ALL_IMAGES[*]})"
            images+=("$arg") ;;
    esac
done
[ "${#images[@]}" -gt 0 ] || images=("${ALL_IMAGES[@]}")

# --- checks -------------------------------------------------------------------
[ -x "$BUSYBOX" ] || die "$BUSYBOX not found; install busybox-static (scripts/ensure_docker.sh does)"
if LC_ALL=C ldd "$BUSYBOX" 2>&1 | grep -q '=>'; then
    die "$BUSYBOX is dynamically linked; install busybox-static (scripts/ensure_docker.sh does)"
fi
docker info >/dev/null 2>&1 || die "docker daemon not reachable; run scripts/ensure_docker.sh"

# The legacy builder is enough (COPY only) and needs no buildx plugin.
export DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-0}"

# --- build ----------------------------------------------------------------------
tmp_root="$(mktemp -d "${TMPDIR:-/tmp}/deploy-test-images.XXXXXX")"
trap 'rm -rf "$tmp_root"' EXIT

source_hash() { # IMAGE
    {
        sha256sum "$BUSYBOX" | cut -d' ' -f1
        cd "$HERE"
        find common "$1" -type f -printf '%m %p\n' | LC_ALL=C sort
        find common "$1" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
    } | sha256sum | cut -c1-16
}

for img in "${images[@]}"; do
    tag="$PREFIX/$img:latest"
    hash="$(source_hash "$img")"
    have="$(docker image inspect -f "{{ index .Config.Labels \"$HASH_LABEL\" }}" "$tag" 2>/dev/null || true)"
    if [ "$force" -eq 0 ] && [ "$have" = "$hash" ]; then
        say "$tag is up to date, skipping (use --force to rebuild)"
        continue
    fi
    [ -n "$have" ] && [ "$force" -eq 0 ] && say "$tag exists but its sources changed; rebuilding"

    ctx="$tmp_root/$img"
    mkdir -p "$ctx/rootfs/bin" "$ctx/rootfs/tmp"
    chmod 1777 "$ctx/rootfs/tmp"
    install -m 0755 "$BUSYBOX" "$ctx/rootfs/bin/busybox"
    # Same result as `busybox --install -s /bin`, done in the context instead
    # of a RUN step (no build container).
    for applet in $("$BUSYBOX" --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$ctx/rootfs/bin/$applet"
    done
    cp -a "$HERE/common/rootfs/." "$ctx/rootfs/"
    cp -a "$HERE/$img/rootfs/." "$ctx/rootfs/"
    cp "$HERE/$img/Dockerfile" "$ctx/Dockerfile"

    say "building $tag ($(du -sh "$ctx" | cut -f1) context)"
    start=$(date +%s.%N)
    if ! out="$(docker build --label "$HASH_LABEL=$hash" -t "$tag" "$ctx" 2>&1)"; then
        echo "$out" >&2
        die "building $tag failed"
    fi
    say "built $tag in $(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e-s}')s"
done
