"""A safe, shallow `git clone` of an agent's source, for image builds.

The URL and branch come from users, so the clone is built to do nothing but fetch one branch of one
repository over the transports we allow:

- Inputs are re-validated here by the rules the schemas check (`deploy_service.references`; defence
  in depth: a caller that skipped the schema still cannot smuggle an option or a transport); a bad
  input never spawns a process.
- Transports: `protocol.allow=never` with only `https` allowed (and `file` when local sources are
  allowed, for tests), repeated in `GIT_ALLOW_PROTOCOL`. A local absolute path is turned into a
  `file://` URL so that `--depth` applies and git's local hard-link shortcut is not used.
- No configuration but ours: system and global config are ignored, `HOME` is an empty temporary
  directory, hooks point at `/dev/null`, submodules and tags are not fetched, and nothing can prompt
  (stdin is `/dev/null`, askpass helpers are `/bin/true`).
- The URL comes after `--`, so it is never read as an option.
- Where git connects (the service's own process reaches out, so a source must not make it probe the
  operator's network): the host is refused by name or literal address (`references.check_git_origin`),
  then resolved once here; any answer that is not a public address refuses the clone unless the host is in
  `ALLOWED_GIT_HOSTS` (`RunnerSettings.allowed_git_hosts`), with a message naming the host, never the
  address. git is then pinned to the addresses checked (`http.curloptResolve`, so libcurl looks nothing up
  again: no DNS rebinding between check and connect) and follows no redirect (`http.followRedirects=false`,
  which also stops dumb-HTTP alternates), so no answer can send it elsewhere.
- A deadline: on timeout the whole process group (git and its remote helpers) is killed.
- A size cap (`GIT_MAX_REPO_MB`): the destination is measured (disk space, `.git` and checkout)
  twice a second while git runs and once after; past the cap git is killed and the clone fails. A
  shallow clone already bounds the history, but not one huge commit or a checkout that inflates.
- A `Cancellation`: looked at just as often; a cancelled clone is killed and raises `BuildCancelled`.

`clone_command` and `clone_environment` are pure, so their shape is unit-tested without running git.
Output lines are handed to `on_output` on the calling thread (a reader thread only queues them); a line
longer than `line_max_bytes` comes in pieces (`runner.lines.read_lines`), so a remote that sends output
without newlines cannot make the reader hold it all.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO

from deploy_service.references import (
    InvalidReference,
    check_git_origin,
    check_git_url,
    check_ref_name,
    git_host_allowed,
    git_host_port,
    is_public_address,
    resolved_addresses,
)
from deploy_service.runner.cancellation import Cancellation
from deploy_service.runner.errors import BuildCancelled, BuildFailed, RunnerError
from deploy_service.runner.lines import read_lines

__all__ = [
    "branch_head",
    "checked_addresses",
    "clone",
    "clone_command",
    "clone_environment",
    "head_commit",
    "normalize_git_url",
    "tree_bytes",
]

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
LOG_TAIL_LINES = 50
LINE_MAX_BYTES = 16 * 1024
"""`LOG_LINE_MAX_BYTES`'s default (`RunnerSettings.log_line_max_bytes`)."""
WATCH_SECONDS = 0.5
"""How often a running clone is measured and its cancellation looked at."""
MB = 1024 * 1024
_EOF = None


def normalize_git_url(git_url: str, *, allow_local: bool) -> str:
    """Validate `git_url` and return the URL git is given (`/abs/path` becomes `file:///abs/path`).

    Raises:
        BuildFailed: the URL is not allowed.
    """
    try:
        check_git_url(git_url, allow_local=allow_local)
    except InvalidReference as exc:
        raise BuildFailed(f"Refusing to clone {git_url!r}: {exc}") from exc
    if git_url.startswith("/"):
        return "file://" + git_url
    return git_url


def _validate_branch(branch: str) -> None:
    try:
        check_ref_name(branch)
    except InvalidReference as exc:
        raise BuildFailed(f"Refusing to clone branch {branch!r}: {exc}") from exc


def checked_addresses(git_url: str, *, allow_local: bool, allowed_hosts: Iterable[str] = ()) -> tuple[str, ...]:
    """The addresses the host of `git_url` resolves to, looked up once and each one checked; empty for a
    local source.

    Args:
        allowed_hosts: `ALLOWED_GIT_HOSTS`: a host listed there may be or resolve to a private address.

    Raises:
        BuildFailed: the URL is not allowed (nothing is looked up); the host is private by name or address,
            does not resolve, or resolves to an address that is not public, and is not allowed (the message
            never shows an address).
    """
    normalize_git_url(git_url, allow_local=allow_local)
    target = git_host_port(git_url)
    if target is None:
        return ()
    host, port = target
    try:
        check_git_origin(git_url, allowed_hosts=allowed_hosts)
    except InvalidReference as exc:
        raise BuildFailed(f"Refusing to clone: {exc}") from exc
    addresses = resolved_addresses(host, port)
    if not addresses:
        raise BuildFailed(f"Refusing to clone: the git host {host} could not be resolved.")
    if not all(is_public_address(address) for address in addresses) and not git_host_allowed(host, port, allowed_hosts):
        raise BuildFailed(
            f"Refusing to clone: the git host {host} resolves to a loopback or private address; sources may come "
            "from it only when the operator lists it in ALLOWED_GIT_HOSTS."
        )
    return tuple(str(address) for address in addresses)


def _pin_option(git_url: str, pin: Sequence[str]) -> list[str]:
    """`-c http.curloptResolve=host:port:addr[,addr]` for `git_url`'s host (none for a local source)."""
    target = git_host_port(git_url)
    if target is None or not pin:
        return []
    host, port = target
    addresses = ",".join(f"[{a}]" if ":" in a else a for a in pin)
    return ["-c", f"http.curloptResolve={host}:{port}:{addresses}"]


def _options(git_url: str, *, allow_local: bool, pin: Sequence[str]) -> list[str]:
    """The `-c` options every git command of a clone runs with (transports, redirects, pinning, hooks)."""
    protocols = ["-c", "protocol.allow=never", "-c", "protocol.https.allow=always"]
    if allow_local:
        protocols += ["-c", "protocol.file.allow=always"]
    return [
        *protocols,
        "-c",
        "http.followRedirects=false",
        *_pin_option(git_url, pin),
        "-c",
        "core.hooksPath=/dev/null",
    ]


def clone_command(
    git_url: str, branch: str, dest: str, *, allow_local: bool, git: str = "git", pin: Sequence[str] = ()
) -> list[str]:
    """The argv of a shallow single-branch clone of `branch` of `git_url` into `dest`.

    Args:
        pin: the addresses git must connect to for the URL's host (`checked_addresses`); `clone`
            always gives them for an https URL.

    Raises:
        BuildFailed: the URL or branch is not allowed.
    """
    url = normalize_git_url(git_url, allow_local=allow_local)
    _validate_branch(branch)
    return [
        git,
        *_options(git_url, allow_local=allow_local, pin=pin),
        "clone",
        "--depth",
        "1",
        "--single-branch",
        "--no-tags",
        "--no-recurse-submodules",
        "--branch",
        branch,
        "--",
        url,
        dest,
    ]


def commit_commands(
    git_url: str, commit: str, dest: str, *, allow_local: bool, git: str = "git", pin: Sequence[str] = ()
) -> list[list[str]]:
    """The argvs that fetch exactly `commit` of `git_url` into `dest` (shallow) and check it out, detached.

    git 2.39 has no `clone --revision`: an empty repository, a `fetch --depth 1` of the commit (servers
    speaking protocol v2 serve any commit reachable from a ref; GitHub and GitLab do), a checkout.

    Raises:
        BuildFailed: the URL is not allowed, or `commit` is not a full SHA.
    """
    url = normalize_git_url(git_url, allow_local=allow_local)
    if not _SHA.match(commit):
        raise BuildFailed(f"Refusing to fetch {commit!r}: not a full commit SHA.")
    options = _options(git_url, allow_local=allow_local, pin=pin)
    return [
        [git, *options, "init", "--quiet", "--", dest],
        [git, *options, "-C", dest, "fetch", "--depth", "1", "--no-tags", "--no-recurse-submodules", "--", url, commit],
        [git, *options, "-C", dest, "checkout", "--quiet", "--detach", commit],
    ]


def clone_environment(home: str, *, allow_local: bool, path: str | None = None) -> dict[str, str]:
    """The complete, minimal environment git runs with (nothing is inherited but `PATH`)."""
    return {
        "PATH": path if path is not None else os.environ.get("PATH", DEFAULT_PATH),
        "HOME": home,
        "LC_ALL": "C",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "/bin/true",
        "SSH_ASKPASS": "/bin/true",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_ALLOW_PROTOCOL": "https:file" if allow_local else "https",
    }


def clone(
    git_url: str,
    branch: str,
    dest: str,
    *,
    timeout: float,
    allow_local: bool,
    on_output: Callable[[str], None] | None = None,
    line_max_bytes: int = LINE_MAX_BYTES,
    max_mb: int | None = None,
    cancel: Cancellation | None = None,
    allowed_hosts: Iterable[str] = (),
    commit: str | None = None,
) -> None:
    """Shallow-clone `branch` of `git_url` into `dest` (which must not exist yet, or be empty).

    Args:
        commit: fetch and check out this commit instead of the branch's head (a release built before,
            built again: `commit_commands`).
        max_mb: the most disk space the clone may take (None: no cap).
        cancel: stops the clone when cancelled.
        allowed_hosts: `ALLOWED_GIT_HOSTS` (hosts that may be, or resolve to, private addresses).

    Raises:
        BuildFailed: a refused input, a host that is or resolves to a private address (git never runs), git
            missing, a timeout (the process is killed), a clone larger than `max_mb` (killed as it grows past
            it), or a non-zero exit (with the tail of git's output in `log`; a redirect is one).
        BuildCancelled: `cancel` was cancelled (git is killed).
    """
    git = shutil.which("git", path=os.environ.get("PATH", DEFAULT_PATH))
    # A bad URL, branch or commit: refused before anything runs.
    clone_command(git_url, branch, dest, allow_local=allow_local)
    if commit is not None:
        commit_commands(git_url, commit, dest, allow_local=allow_local)
    if git is None:
        raise BuildFailed("git is not installed on the server.")
    cancel = cancel or Cancellation()
    cancel.check()
    pin = checked_addresses(git_url, allow_local=allow_local, allowed_hosts=allowed_hosts)
    if commit is None:
        argvs = [clone_command(git_url, branch, dest, allow_local=allow_local, git=git, pin=pin)]
    else:
        argvs = commit_commands(git_url, commit, dest, allow_local=allow_local, git=git, pin=pin)

    def watch() -> RunnerError | None:
        if cancel.cancelled:
            return BuildCancelled()
        return _too_large(dest, max_mb)

    deadline = time.monotonic() + timeout
    with tempfile.TemporaryDirectory(prefix="deploy-git-home-") as home:
        env = clone_environment(home, allow_local=allow_local)
        for argv in argvs:
            returncode, tail = _run(
                argv,
                env=env,
                cwd=home,
                timeout=max(deadline - time.monotonic(), 0.0),
                on_output=on_output,
                line_max_bytes=line_max_bytes,
                watch=watch,
            )
            if returncode is None:
                raise BuildFailed(f"clone timed out after {timeout:g}s", log=tail)
            if returncode != 0:
                what = "git clone" if commit is None else f"fetching commit {commit}"
                raise BuildFailed(f"{what} failed (exit code {returncode})", log=tail)
    late = watch()
    if late is not None:
        raise late


_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


def ls_remote_command(
    git_url: str, branch: str, *, allow_local: bool, git: str = "git", pin: Sequence[str] = ()
) -> list[str]:
    """The argv that asks `git_url` which commit `branch` names, without fetching anything.

    Raises:
        BuildFailed: the URL or branch is not allowed.
    """
    url = normalize_git_url(git_url, allow_local=allow_local)
    _validate_branch(branch)
    return [
        git,
        *_options(git_url, allow_local=allow_local, pin=pin),
        "ls-remote",
        "--heads",
        "--",
        url,
        f"refs/heads/{branch}",
    ]


def branch_head(
    git_url: str,
    branch: str,
    *,
    timeout: float,
    allow_local: bool,
    allowed_hosts: Iterable[str] = (),
) -> str:
    """The full SHA `branch` of `git_url` names now (`git ls-remote`: one round trip, nothing cloned).

    The same safety as `clone`: inputs re-validated, the host checked and pinned, our transports and
    configuration only, a deadline.

    Raises:
        BuildFailed: a refused input or host, git missing, a timeout, a failure (the tail of git's output
            in `log`), or no such branch.
    """
    git = shutil.which("git", path=os.environ.get("PATH", DEFAULT_PATH))
    ls_remote_command(git_url, branch, allow_local=allow_local)  # a bad input: refused before anything runs
    if git is None:
        raise BuildFailed("git is not installed on the server.")
    pin = checked_addresses(git_url, allow_local=allow_local, allowed_hosts=allowed_hosts)
    argv = ls_remote_command(git_url, branch, allow_local=allow_local, git=git, pin=pin)
    output: list[str] = []
    with tempfile.TemporaryDirectory(prefix="deploy-git-home-") as home:
        returncode, tail = _run(
            argv,
            env=clone_environment(home, allow_local=allow_local),
            cwd=home,
            timeout=timeout,
            on_output=output.append,
            line_max_bytes=LINE_MAX_BYTES,
            watch=lambda: None,
        )
    if returncode is None:
        raise BuildFailed(f"asking for branch {branch!r} timed out after {timeout:g}s", log=tail)
    if returncode != 0:
        raise BuildFailed(f"git ls-remote failed (exit code {returncode})", log=tail)
    wanted = f"refs/heads/{branch}"
    for line in output:
        sha, _, ref = line.strip().partition("\t")
        if ref == wanted and _SHA.match(sha):
            return sha
    raise BuildFailed(f"The repository has no branch {branch!r}.", log=tail)


def head_commit(dest: str) -> str | None:
    """The full SHA a clone in `dest` checked out, read from its `.git` files (no process); None if unknown.

    `HEAD` names the branch (`ref: refs/heads/<branch>`), whose SHA is in its loose ref file or in
    `packed-refs`. The clone made those files itself; a ref that leaves `.git/refs/` is not followed.
    """
    git_dir = os.path.join(dest, ".git")
    try:
        with open(os.path.join(git_dir, "HEAD"), encoding="utf-8") as handle:
            head = handle.read(4096).strip()
        if _SHA.match(head):
            return head
        if not head.startswith("ref: refs/"):
            return None
        ref = head[len("ref: ") :]
        loose = os.path.realpath(os.path.join(git_dir, ref))
        if not loose.startswith(os.path.realpath(os.path.join(git_dir, "refs")) + os.sep):
            return None
        if os.path.isfile(loose):
            with open(loose, encoding="utf-8") as handle:
                sha = handle.read(200).strip()
            return sha if _SHA.match(sha) else None
        with open(os.path.join(git_dir, "packed-refs"), encoding="utf-8") as handle:
            for line in handle:
                sha, _, name = line.strip().partition(" ")
                if name == ref and _SHA.match(sha):
                    return sha
    except OSError:
        return None
    return None


def tree_bytes(path: str) -> int:
    """The disk space the files and directories under `path` take (what vanishes meanwhile is skipped)."""
    total = 0
    for root, dirs, files in os.walk(path, onerror=lambda error: None):
        for name in dirs + files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                continue
    return total


def _too_large(dest: str, max_mb: int | None) -> BuildFailed | None:
    if max_mb is None:
        return None
    size = tree_bytes(dest)
    if size <= max_mb * MB:
        return None
    return BuildFailed(
        f"The repository is larger than {max_mb} MB (GIT_MAX_REPO_MB): the clone was stopped at {size / MB:.0f} MB."
    )


def _run(
    argv: list[str],
    *,
    env: Mapping[str, str],
    cwd: str,
    timeout: float,
    on_output: Callable[[str], None] | None,
    line_max_bytes: int,
    watch: Callable[[], RunnerError | None],
) -> tuple[int | None, str]:
    """Run `argv` with a deadline; return (exit code or None on timeout, tail of the output).

    Raises:
        RunnerError: what `watch` (called every `WATCH_SECONDS`) returned; the process is killed first.
    """
    deadline = time.monotonic() + timeout
    tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
    lines: queue.Queue[str | None] = queue.Queue()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(env),
        cwd=cwd,
        start_new_session=True,
    )
    assert proc.stdout is not None
    reader = threading.Thread(
        target=_pump, args=(proc.stdout, lines, line_max_bytes), name="git-clone-output", daemon=True
    )
    reader.start()
    timed_out = False
    stopped: RunnerError | None = None
    watched = time.monotonic()
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            if time.monotonic() - watched >= WATCH_SECONDS:
                watched = time.monotonic()
                stopped = watch()
                if stopped is not None:
                    break
            try:
                line = lines.get(timeout=min(remaining, WATCH_SECONDS))
            except queue.Empty:
                continue
            if line is _EOF:
                break
            tail.append(line)
            if on_output is not None:
                on_output(line)
        if not timed_out and stopped is None:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                timed_out = True
    finally:
        if timed_out or stopped is not None or proc.poll() is None:
            _kill_group(proc)
        proc.wait()
        reader.join(timeout=5)
        proc.stdout.close()
    if stopped is not None:
        stopped.log = "\n".join(tail)
        raise stopped
    return (None if timed_out else proc.returncode), "\n".join(tail)


def _pump(stream: IO[bytes], lines: queue.Queue[str | None], max_bytes: int) -> None:
    try:
        for line in read_lines(stream, max_bytes):
            lines.put(line)
    except (OSError, ValueError):
        pass
    finally:
        lines.put(_EOF)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:
        proc.kill()
