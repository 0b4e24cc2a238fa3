#!/usr/bin/env bash
# Make a working Docker engine available on this machine (idempotent).
#
# - If `docker info` already answers (DOCKER_HOST is respected), do nothing.
# - Otherwise install docker.io via apt if `dockerd` is missing, start dockerd
#   in the background and wait for it to answer.
# - Always make sure busybox-static is installed: the integration test images
#   (tests/integration/images/) are built FROM scratch around /bin/busybox,
#   because no image registry is reachable (docker pull cannot work).
#
# All messages go to stderr and are prefixed "ensure_docker:".
#
# Environment overrides:
#   DOCKERD_LOG        log file      (default /tmp/deploy-service-dockerd.log)
#   DOCKERD_PIDFILE    pid file      (default /tmp/deploy-service-dockerd.pid)
#   DOCKERD_WAIT_SECS  start timeout (default 60)
#   DOCKERD_EXTRA_ARGS extra dockerd flags, word-split (default empty)
set -euo pipefail

LOG_FILE="${DOCKERD_LOG:-/tmp/deploy-service-dockerd.log}"
PID_FILE="${DOCKERD_PIDFILE:-/tmp/deploy-service-dockerd.pid}"
WAIT_SECS="${DOCKERD_WAIT_SECS:-60}"

say() { echo "ensure_docker: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

docker_ok() {
    command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1
}

# Run apt-get, waiting for the dpkg/apt locks instead of failing when another
# apt process (e.g. a concurrent `apt-get update`) holds them.  Never kills it.
apt_get() {
    local attempt log rc
    log="$(mktemp)"
    for attempt in $(seq 1 120); do
        rc=0
        as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get -o DPkg::Lock::Timeout=300 -o Acquire::Retries=3 "$@" >"$log" 2>&1 || rc=$?
        if [ "$rc" -ne 0 ] &&
            grep -qiE 'could not get lock|unable to lock|another process using it' "$log"; then
            say "apt is locked by another process; waiting (attempt $attempt)"
            sleep 5
            continue
        fi
        cat "$log" >&2
        rm -f "$log"
        return "$rc"
    done
    cat "$log" >&2
    rm -f "$log"
    die "apt stayed locked for 10 minutes"
}

APT_UPDATED=0
apt_install() {
    # Refresh the package lists once if the package has no install candidate.
    local pkg
    for pkg in "$@"; do
        if [ "$APT_UPDATED" -eq 0 ] &&
            ! apt-cache policy "$pkg" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
            say "running apt-get update (no candidate for $pkg)"
            apt_get update -q >&2
            APT_UPDATED=1
        fi
    done
    apt_get install -y -q --no-install-recommends "$@" >&2
}

pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# True if /bin/busybox exists and is statically linked.
busybox_static_ok() {
    [ -x /bin/busybox ] || return 1
    pkg_installed busybox-static && return 0
    # Not from Debian's package; accept any static busybox (no ELF interpreter).
    if command -v file >/dev/null 2>&1; then
        file -L /bin/busybox | grep -q 'statically linked' && return 0
    fi
    LC_ALL=C ldd /bin/busybox 2>&1 | grep -q 'not a dynamic executable'
}

ensure_busybox_static() {
    if ! busybox_static_ok; then
        say "installing busybox-static (needed to build the test images)"
        # busybox-static conflicts with (and replaces) the dynamic 'busybox'.
        apt_install busybox-static
        busybox_static_ok || die "/bin/busybox is still not a static binary"
    fi
}

# A daemon that runs but whose socket this user may not open: say so at once, never wait it out.
socket_refused() {
    local socket="${DOCKER_HOST:-}"
    socket="${socket#unix://}"
    [ -n "${DOCKER_HOST:-}" ] || socket=/var/run/docker.sock
    [ "$(id -u)" -ne 0 ] && [ -S "$socket" ] && { [ ! -r "$socket" ] || [ ! -w "$socket" ]; }
}
socket_hint() {
    die "the Docker socket ${DOCKER_HOST:-unix:///var/run/docker.sock} is not open to user $(id -un): add it to the docker group (sudo usermod -aG docker $(id -un), then log in again) or run as root"
}

# --- 1. Already running? ----------------------------------------------------
if docker_ok; then
    ensure_busybox_static
    exit 0
fi
if socket_refused; then
    socket_hint
fi

# We only ever manage a daemon on the default local socket.
case "${DOCKER_HOST:-}" in
    '' | unix:///var/run/docker.sock | unix:///run/docker.sock) ;;
    *) die "DOCKER_HOST=$DOCKER_HOST does not answer; not starting a local dockerd (unset DOCKER_HOST to use the default socket)" ;;
esac

# --- 2. Install what is missing ---------------------------------------------
need=()
if ! command -v dockerd >/dev/null 2>&1; then
    say "dockerd not found; installing docker.io with apt-get"
    need+=(docker.io)
fi
if ! busybox_static_ok; then
    say "installing busybox-static (needed to build the test images)"
    need+=(busybox-static)
fi
if [ "${#need[@]}" -gt 0 ]; then
    apt_install "${need[@]}"
fi
command -v dockerd >/dev/null 2>&1 || die "dockerd still missing after install"
command -v docker >/dev/null 2>&1 || die "docker CLI missing"
busybox_static_ok || die "/bin/busybox is still not a static binary"

# --- 3. Start dockerd ---------------------------------------------------------
# Is a dockerd we started earlier still alive (maybe still starting up)?
if [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null &&
    grep -q dockerd "/proc/$(cat "$PID_FILE")/cmdline" 2>/dev/null; then
    say "dockerd already started (pid $(cat "$PID_FILE")); waiting for it"
else
    # Verified on the Debian 12 sandbox (kernel 6.x, cgroup v1, ext4 root,
    # docker.io 20.10.24): no storage-driver or cgroup flags are needed.
    # overlay2 works on /var/lib/docker, and dockerd falls back to vfs on its
    # own if overlay is unavailable; the cgroupfs driver handles --memory
    # limits and reports OOM kills.  Pass DOCKERD_EXTRA_ARGS (e.g.
    # "--storage-driver=vfs") where a host needs more.
    #
    # Flags:
    #   --bridge=none / --iptables=false / --ip6tables=false: no docker0 bridge,
    #     no NAT/iptables rules. Containers use --network host (or none); nothing
    #     may leave loopback on this machine anyway.
    #   --pidfile / --host: explicit, so we know what we started.
    args=(
        --bridge=none
        --iptables=false
        --ip6tables=false
        --host=unix:///var/run/docker.sock
        --pidfile="$PID_FILE"
    )
    # shellcheck disable=SC2206
    args+=(${DOCKERD_EXTRA_ARGS:-})
    say "starting dockerd ${args[*]} (log: $LOG_FILE)"
    sudo_=()
    [ "$(id -u)" -eq 0 ] || sudo_=(sudo -n)
    # setsid+nohup: fully detached, survives the caller's shell/session.
    # (dockerd itself writes $PID_FILE once it has initialised.)
    "${sudo_[@]}" setsid nohup dockerd "${args[@]}" >>"$LOG_FILE" 2>&1 </dev/null &
    started_pid=$!
fi

start=$(date +%s)
while ! docker_ok; do
    if [ $(( $(date +%s) - start )) -ge "$WAIT_SECS" ]; then
        say "dockerd did not answer within ${WAIT_SECS}s; last log lines:"
        tail -n 30 "$LOG_FILE" >&2 || true
        exit 1
    fi
    if socket_refused; then
        socket_hint
    fi
    if [ -n "${started_pid:-}" ] && ! kill -0 "$started_pid" 2>/dev/null; then
        say "dockerd exited; last log lines:"
        tail -n 30 "$LOG_FILE" >&2 || true
        exit 1
    fi
    sleep 0.5
done
say "dockerd is up after $(( $(date +%s) - start ))s"
