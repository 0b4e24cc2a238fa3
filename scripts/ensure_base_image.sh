#!/usr/bin/env bash
# Make the local base image that the production image's test builds on (idempotent).
#
# No image registry is reachable here, so `python:3.11-slim` (the Dockerfile's default BASE) cannot be
# pulled. tests/integration/test_production_image.py builds the Dockerfile with
# BASE=deploy-service-base:debian12 instead: Debian 12 (bookworm), made once with Debian's
# `debootstrap --variant=minbase` and kept as a local image, with Debian's python3 (3.11),
# python3-venv, git and ca-certificates. When the image exists this does nothing; debootstrap is
# installed when missing.
#
# The mirror is the one this machine's apt uses for bookworm (/etc/apt/sources.list.d/*.sources or
# /etc/apt/sources.list), else deb.debian.org; DEBIAN_MIRROR overrides it.
#
# All messages go to stderr and are prefixed "ensure_base_image:".
set -euo pipefail

IMAGE=deploy-service-base:debian12
SUITE=bookworm
INCLUDE=python3,python3-venv,git,ca-certificates

say() { echo "ensure_base_image: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi; }

docker info >/dev/null 2>&1 || die "the Docker engine does not answer (run scripts/ensure_docker.sh first)"
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    exit 0
fi

# The first URI of an apt source (deb822 stanza or one-line form) that serves $SUITE.
apt_mirror() {
    local file
    for file in /etc/apt/sources.list.d/*.sources; do
        [ -f "$file" ] || continue
        awk -v suite="$SUITE" '
            /^[[:space:]]*$/ { if (uri != "" && has) { print uri; exit } uri = ""; has = 0; next }
            tolower($1) == "uris:" { uri = $2 }
            tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == suite) has = 1 }
            END { if (uri != "" && has) print uri }
        ' "$file" | head -n 1
    done
    if [ -f /etc/apt/sources.list ]; then
        awk -v suite="$SUITE" '$1 == "deb" && $0 !~ /\[/ && $3 == suite { print $2; exit }' /etc/apt/sources.list
    fi
}
mirror="${DEBIAN_MIRROR:-$(apt_mirror | head -n 1)}"
mirror="${mirror:-http://deb.debian.org/debian}"

if ! command -v debootstrap >/dev/null 2>&1; then
    say "installing Debian's debootstrap"
    install=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q
        --no-install-recommends debootstrap)
    as_root "${install[@]}" >&2 || { as_root apt-get -o DPkg::Lock::Timeout=300 update -q >&2 && as_root "${install[@]}" >&2; }
fi
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || die "debootstrap still missing after installing it"
PATH="$PATH:/usr/sbin:/sbin"

work="$(mktemp -d /var/tmp/deploy-service-base.XXXXXX)"
tmp_tag="deploy-service-base:partial-$$"
cleanup() {
    as_root rm -rf "$work"
    docker image rm "$tmp_tag" >/dev/null 2>&1 || true
}
trap cleanup EXIT

started=$(date +%s)
say "debootstrap --variant=minbase $SUITE from $mirror (a few minutes, once)"
as_root debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$work/root" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
# What an image needs none of: package lists and archives, docs and man pages, debootstrap's own files.
as_root rm -rf "$work/root/var/lib/apt/lists/"* "$work/root/var/cache/apt/"* "$work/root/debootstrap" \
    "$work/root/usr/share/doc/"* "$work/root/usr/share/man/"* "$work/root/usr/share/info/"*

# Imported under a temporary tag, named only once the whole tree went in.
as_root tar -C "$work/root" --numeric-owner -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'LABEL org.opencontainers.image.description="Debian 12 minbase with python3, python3-venv, git (scripts/ensure_base_image.sh)"' \
    --change 'CMD ["/bin/bash"]' \
    - "$tmp_tag" >/dev/null
docker tag "$tmp_tag" "$IMAGE"
say "made $IMAGE in $(( $(date +%s) - started ))s ($(docker image inspect --format '{{.Size}}' "$IMAGE" | numfmt --to=iec))"
