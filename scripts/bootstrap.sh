#!/usr/bin/env bash
# Make sure .venv exists and holds requirements-dev.txt; reinstalls only when the requirements change.
# Sourced by run.sh and test.sh; puts .venv/bin first on PATH.
#
# On a fresh Debian machine `python3 -m venv` needs the python3-venv package: it is installed here when
# this runs as root (or with password-less sudo), else one line says what to install. A .venv left half
# made by an earlier failed try (no pip in it, or a Python that no longer runs) is removed and made again.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

_bootstrap_say() { echo "bootstrap: $*" >&2; }
# Sourced (by run.sh, test.sh, make) `return` ends this script; run directly, `exit` does. Explicit, because
# `set -e` does not apply in a sourced script that is part of an `&&` list.

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  { _bootstrap_say "no $PYTHON on PATH: install Python 3.11 or newer (Debian: apt-get install python3 python3-venv)"; return 1 2>/dev/null || exit 1; }
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  { _bootstrap_say "$("$PYTHON" --version 2>&1) is too old: Python 3.11 or newer is needed (set PYTHON=python3.11 ...)"; return 1 2>/dev/null || exit 1; }
fi

# A venv that cannot run pip is half made (an interrupted or failed `python -m venv`): start it again.
if [ -e "$VENV" ] && ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
  echo "bootstrap: $VENV is incomplete (no working pip): making it again" >&2
  rm -rf "$VENV"
fi

if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    pyver="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo -n); fi
    if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" -eq 0 ] || sudo -n true 2>/dev/null; }; then
      echo "bootstrap: installing Debian's python3-venv (python$pyver-venv), which python3 -m venv needs" >&2
      "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >&2 \
        || { "${sudo[@]}" apt-get update -q >&2 \
          && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >&2; } \
        || "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "python$pyver-venv" >&2
    else
      { _bootstrap_say "python3 -m venv needs Debian's python3-venv: run 'sudo apt-get install python3-venv', then again"; return 1 2>/dev/null || exit 1; }
    fi
  fi
  echo "bootstrap: creating $VENV" >&2
  if ! "$PYTHON" -m venv "$VENV"; then
    rm -rf "$VENV"
    { _bootstrap_say "python3 -m venv failed (see above); nothing was left behind"; return 1 2>/dev/null || exit 1; }
  fi
fi
stamp="$VENV/.requirements.sha256"
want="$(cat "$ROOT/requirements.txt" "$ROOT/requirements-dev.txt" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "bootstrap: installing Python packages into $VENV" >&2
  # The stamp is written only after both installs succeed: a failed one is tried again next time.
  if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2 \
    || ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$ROOT/requirements-dev.txt" >&2 \
    || ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
      -e "$ROOT" >&2; then  # deployctl (deploy_client/, editable), its dependencies are in requirements.txt
    rm -f "$stamp"
    { _bootstrap_say "installing the Python packages failed (see above); run it again once that is fixed"; return 1 2>/dev/null || exit 1; }
  fi
  echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
