#!/usr/bin/env bash
# Make OpenSSH's server and client tools available for the ssh:// engine tests (idempotent).
#
# tests/integration/test_ssh_engine.py starts a throwaway sshd of its own on loopback (its own config,
# host key and authorized key, all in the test's tmp directory) and points DOCKER_HOST=ssh://... at it;
# it needs `sshd` and `ssh-keygen`, which Debian's openssh-server and openssh-client provide. Nothing is
# started here, and the machine's own sshd (if any) is left alone: the package's service is not enabled
# where no init system runs, and the tests never use it.
#
# sshd refuses to start without its privilege-separation directory (/run/sshd), which only its service
# unit creates; it is made here too, because /run is emptied at boot.
#
# All messages go to stderr and are prefixed "ensure_sshd:".
set -euo pipefail

say() { echo "ensure_sshd: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

sshd_path() {
    command -v sshd 2>/dev/null || { [ -x /usr/sbin/sshd ] && echo /usr/sbin/sshd; }
}

need=()
[ -n "$(sshd_path)" ] || need+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
if [ "${#need[@]}" -gt 0 ]; then
    say "installing Debian's ${need[*]}"
    install=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q
        --no-install-recommends "${need[@]}")
    as_root "${install[@]}" >&2 || { as_root apt-get -o DPkg::Lock::Timeout=300 update -q >&2 && as_root "${install[@]}" >&2; }
fi
[ -n "$(sshd_path)" ] || die "sshd still missing after installing openssh-server"
command -v ssh-keygen >/dev/null 2>&1 || die "ssh-keygen still missing after installing openssh-client"
[ -d /run/sshd ] || as_root install -d -m 0755 /run/sshd
