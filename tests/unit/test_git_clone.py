"""The git clone used by builds: the exact command and environment, refusals, and the deadline.

No network and no real repository: the argv/env builders are pure, refused inputs must not start a
process at all, and timeouts and failures are driven through a stand-in `git` script. The one lookup a
clone makes is answered here (`example.com` is a public address; nothing else resolves), so no test asks
a real resolver; where a clone may connect is tests/security/test_git_origins.py.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from deploy_service.runner import BuildCancelled, BuildFailed, Cancellation
from deploy_service.runner.git import (
    branch_head,
    clone,
    clone_command,
    clone_environment,
    commit_commands,
    head_commit,
    ls_remote_command,
)

SAFE_PREFIX = ["-c", "protocol.allow=never", "-c", "protocol.https.allow=always"]
CLONE_FLAGS = ["clone", "--depth", "1", "--single-branch", "--no-tags", "--no-recurse-submodules"]
PUBLIC = "93.184.216.34"


@pytest.fixture(autouse=True)
def _resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    def getaddrinfo(host: Any, port: Any, *_: Any, **__: Any) -> list[Any]:
        if host != "example.com":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC, port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_https_clone_command() -> None:
    argv = clone_command(
        "https://github.com/acme/agent.git", "main", "/tmp/dest", allow_local=False, git="/usr/bin/git", pin=(PUBLIC,)
    )

    assert argv == [
        "/usr/bin/git",
        *SAFE_PREFIX,
        "-c",
        "http.followRedirects=false",
        "-c",
        f"http.curloptResolve=github.com:443:{PUBLIC}",
        "-c",
        "core.hooksPath=/dev/null",
        *CLONE_FLAGS,
        "--branch",
        "main",
        "--",
        "https://github.com/acme/agent.git",
        "/tmp/dest",
    ]


@pytest.mark.parametrize(
    ("url", "expected"),
    [("/srv/repos/agent", "file:///srv/repos/agent"), ("file:///srv/repos/agent", "file:///srv/repos/agent")],
)
def test_local_sources_become_file_urls_when_allowed(url: str, expected: str) -> None:
    argv = clone_command(url, "feature/x", "/tmp/dest", allow_local=True)

    assert argv[1:7] == [*SAFE_PREFIX, "-c", "protocol.file.allow=always"]
    assert argv[-4:] == ["feature/x", "--", expected, "/tmp/dest"]
    assert "--depth" in argv


def test_environment_is_minimal_and_explicit() -> None:
    env = clone_environment("/tmp/home", allow_local=False, path="/usr/bin:/bin")

    assert env == {
        "PATH": "/usr/bin:/bin",
        "HOME": "/tmp/home",
        "LC_ALL": "C",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "/bin/true",
        "SSH_ASKPASS": "/bin/true",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_ALLOW_PROTOCOL": "https",
    }
    assert clone_environment("/tmp/home", allow_local=True)["GIT_ALLOW_PROTOCOL"] == "https:file"


@pytest.mark.parametrize(
    ("url", "branch", "allow_local"),
    [
        ("/srv/repos/agent", "main", False),
        ("file:///srv/repos/agent", "main", False),
        ("http://example.com/acme/agent.git", "main", False),
        ("ssh://git@example.com/acme/agent.git", "main", True),
        ("git@example.com:acme/agent.git", "main", True),
        ("ext::sh -c touch% /tmp/pwned", "main", True),
        ("https://user:token@example.com/acme/agent.git", "main", False),
        ("--upload-pack=touch /tmp/pwned", "main", True),
        ("-uhttps://example.com/a.git", "main", False),
        ("/srv/../etc/agent", "main", True),
        ("https://example.com/acme/agent.git", "--upload-pack=evil", False),
        ("https://example.com/acme/agent.git", "-b", False),
        ("https://example.com/acme/agent.git", "main..evil", False),
        ("https://example.com/acme/agent.git", "", False),
    ],
)
def test_refused_inputs_never_start_git(
    url: str, branch: str, allow_local: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_process(*args: object, **kwargs: object) -> None:
        raise AssertionError("a refused clone must not start a process")

    monkeypatch.setattr(subprocess, "Popen", no_process)

    with pytest.raises(BuildFailed, match="Refusing to clone"):
        clone(url, branch, str(tmp_path / "dest"), timeout=5, allow_local=allow_local)


def fake_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> Path:
    """Put a stand-in `git` first on PATH; it records its argv and environment, then runs `script`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "record"
    git = bin_dir / "git"
    git.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}.argv\nenv > {record}.env\n{script}\n')
    git.chmod(git.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    return record


def test_clone_runs_git_with_the_command_and_streams_its_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = fake_git(tmp_path, monkeypatch, """for last; do :; done; echo "Cloning into '$last'..." >&2; echo done""")
    lines: list[str] = []
    url = "https://example.com/acme/agent.git"

    clone(url, "main", str(tmp_path / "dest"), timeout=10, allow_local=False, on_output=lines.append)

    argv = record.with_suffix(".argv").read_text().splitlines()
    assert argv == clone_command(url, "main", str(tmp_path / "dest"), allow_local=False, pin=(PUBLIC,))[1:]
    env = dict(line.split("=", 1) for line in record.with_suffix(".env").read_text().splitlines() if "=" in line)
    assert env["GIT_ALLOW_PROTOCOL"] == "https" and env["GIT_TERMINAL_PROMPT"] == "0"
    assert env["HOME"] != os.environ.get("HOME") and not os.path.exists(env["HOME"])
    assert "DOCKER_HOST" not in env and "SECRET_KEY" not in env
    assert lines == [f"Cloning into '{tmp_path / 'dest'}'...", "done"]


def test_a_failing_clone_reports_the_tail_of_gits_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_git(tmp_path, monkeypatch, 'echo "fatal: Remote branch nope not found in upstream origin" >&2; exit 128')

    with pytest.raises(BuildFailed, match="exit code 128") as failure:
        clone("https://example.com/acme/agent.git", "nope", str(tmp_path / "dest"), timeout=10, allow_local=False)

    assert "Remote branch nope not found" in failure.value.log


def test_a_clone_past_its_deadline_is_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pid_file = tmp_path / "pid"
    fake_git(tmp_path, monkeypatch, f"echo started; sleep 30 & echo $! > {pid_file}; wait")
    started = time.monotonic()

    with pytest.raises(BuildFailed, match=r"clone timed out after 0.5s") as failure:
        clone("https://example.com/acme/agent.git", "main", str(tmp_path / "dest"), timeout=0.5, allow_local=False)

    assert time.monotonic() - started < 3
    assert "started" in failure.value.log
    assert process_ends(int(pid_file.read_text())), "git's children must be killed with it"


GROW = (
    'for last; do :; done; mkdir -p "$last"; echo growing; i=0; '
    'while :; do i=$((i+1)); head -c 524288 /dev/urandom > "$last/blob$i"; sleep 0.05; done'
)


def test_a_clone_that_grows_past_the_repository_cap_is_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_git(tmp_path, monkeypatch, GROW)
    started = time.monotonic()

    with pytest.raises(BuildFailed, match=r"larger than 2 MB \(GIT_MAX_REPO_MB\)") as failure:
        clone("https://example.com/a.git", "main", str(tmp_path / "dest"), timeout=30, allow_local=False, max_mb=2)

    assert time.monotonic() - started < 10
    assert "growing" in failure.value.log


def test_a_clone_that_ends_past_the_repository_cap_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_git(
        tmp_path, monkeypatch, 'for last; do :; done; mkdir -p "$last"; head -c 3145728 /dev/urandom > "$last/big"'
    )

    with pytest.raises(BuildFailed, match="GIT_MAX_REPO_MB"):
        clone("https://example.com/a.git", "main", str(tmp_path / "dest"), timeout=30, allow_local=False, max_mb=2)


def test_a_cancelled_clone_is_killed_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pid_file = tmp_path / "pid"
    fake_git(tmp_path, monkeypatch, f"echo started; sleep 30 & echo $! > {pid_file}; wait")
    cancel = Cancellation()
    threading.Timer(0.3, cancel.cancel).start()
    started = time.monotonic()

    with pytest.raises(BuildCancelled):
        clone("https://example.com/a.git", "main", str(tmp_path / "dest"), timeout=30, allow_local=False, cancel=cancel)

    assert time.monotonic() - started < 3
    assert process_ends(int(pid_file.read_text())), "git's children must be killed with it"


def test_git_missing_is_a_build_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(BuildFailed, match="git is not installed"):
        clone("https://example.com/acme/agent.git", "main", str(tmp_path / "dest"), timeout=5, allow_local=False)


def process_ends(pid: int, timeout: float = 3.0) -> bool:
    """True once `pid` is gone or a zombie (killed, waiting to be reaped by init)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in {"Z", "X"}:
            return True
        time.sleep(0.02)
    return False


def _repo(path: Path, branch: str = "main") -> str:
    """A repository with one commit on `branch`; returns that commit's SHA."""
    git = ["git", "-C", str(path), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", "-b", branch, str(path)], check=True)
    (path / "Dockerfile").write_text("FROM scratch\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()


def test_the_commit_a_clone_checked_out_is_read_from_its_git_directory(tmp_path: Path) -> None:
    sha = _repo(tmp_path / "origin", branch="release/v1")
    clone(f"file://{tmp_path / 'origin'}", "release/v1", str(tmp_path / "clone"), timeout=30, allow_local=True)
    assert head_commit(str(tmp_path / "clone")) == sha
    subprocess.run(["git", "-C", str(tmp_path / "clone"), "pack-refs", "--all"], check=True)  # refs in packed-refs
    assert head_commit(str(tmp_path / "clone")) == sha


def test_a_clone_at_a_commit_checks_out_that_commit_not_the_branchs_head(tmp_path: Path) -> None:
    first = _repo(tmp_path / "origin")
    git = ["git", "-C", str(tmp_path / "origin"), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    (tmp_path / "origin" / "Dockerfile").write_text("FROM scratch\nLABEL version=2\n")
    subprocess.run([*git, "commit", "-qam", "two"], check=True)
    url = f"file://{tmp_path / 'origin'}"
    clone(url, "main", str(tmp_path / "clone"), timeout=30, allow_local=True, commit=first)
    assert head_commit(str(tmp_path / "clone")) == first
    assert (tmp_path / "clone" / "Dockerfile").read_text() == "FROM scratch\n"


def test_a_clone_at_a_commit_refuses_what_is_not_a_full_sha_and_fails_on_an_unknown_one(tmp_path: Path) -> None:
    _repo(tmp_path / "origin")
    url = f"file://{tmp_path / 'origin'}"
    for bad in ("HEAD", "abc123", "--upload-pack=x", "0" * 39):
        with pytest.raises(BuildFailed, match="not a full commit SHA"):
            commit_commands(url, bad, str(tmp_path / "never"), allow_local=True)
        with pytest.raises(BuildFailed, match="not a full commit SHA"):
            clone(url, "main", str(tmp_path / "never"), timeout=30, allow_local=True, commit=bad)
    assert not (tmp_path / "never").exists()  # refused before git ran
    with pytest.raises(BuildFailed, match="fetching commit") as failed:
        clone(url, "main", str(tmp_path / "clone"), timeout=30, allow_local=True, commit="0" * 40)
    assert failed.value.log  # the tail of git's own words


def test_the_commands_of_a_clone_at_a_commit_carry_the_same_protections() -> None:
    commands = commit_commands(
        "https://git.example.com/a/b.git", "ab" * 20, "/tmp/dest", allow_local=False, pin=("93.184.216.34",)
    )
    assert [argv[0] for argv in commands] == ["git"] * 3
    assert commands[0][-3:] == ["--quiet", "--", "/tmp/dest"]
    for argv in commands:
        assert "protocol.allow=never" in argv and "http.followRedirects=false" in argv
        assert "core.hooksPath=/dev/null" in argv
        assert "http.curloptResolve=git.example.com:443:93.184.216.34" in argv
    assert commands[1][-3:] == ["--", "https://git.example.com/a/b.git", "ab" * 20]
    assert commands[2][-5:] == ["/tmp/dest", "checkout", "--quiet", "--detach", "ab" * 20]


def test_no_commit_is_read_from_what_is_not_a_clone(tmp_path: Path) -> None:
    assert head_commit(str(tmp_path)) is None
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/../../../../etc/passwd\n")
    assert head_commit(str(tmp_path)) is None


def test_a_branchs_head_is_asked_without_cloning_and_only_that_branch_counts(tmp_path: Path) -> None:
    first = _repo(tmp_path / "origin")
    git = ["git", "-C", str(tmp_path / "origin"), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "branch", "feature/main"], check=True)  # a pattern "main" would match it too
    url = f"file://{tmp_path / 'origin'}"
    assert branch_head(url, "main", timeout=30, allow_local=True) == first
    (tmp_path / "origin" / "Dockerfile").write_text("FROM scratch\nLABEL version=2\n")
    subprocess.run([*git, "commit", "-qam", "two"], check=True)
    moved = branch_head(url, "main", timeout=30, allow_local=True)
    assert moved != first and branch_head(url, "feature/main", timeout=30, allow_local=True) == first
    with pytest.raises(BuildFailed, match="no branch 'gone'"):
        branch_head(url, "gone", timeout=30, allow_local=True)
    with pytest.raises(BuildFailed, match="ls-remote failed") as failed:
        branch_head(f"file://{tmp_path / 'nothing'}", "main", timeout=30, allow_local=True)
    assert failed.value.log


def test_asking_for_a_branch_carries_the_clones_protections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ls_remote_command("https://git.example.com/a/b.git", "main", allow_local=False, pin=("93.184.216.34",))
    assert argv[-5:] == ["ls-remote", "--heads", "--", "https://git.example.com/a/b.git", "refs/heads/main"]
    assert "protocol.allow=never" in argv and "http.followRedirects=false" in argv
    assert "http.curloptResolve=git.example.com:443:93.184.216.34" in argv
    started: list[Any] = []
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: started.append(a))
    for url, branch in (("file:///tmp/x", "main"), ("https://example.com/a.git", "--upload-pack=x"), ("ext::sh", "m")):
        with pytest.raises(BuildFailed):
            branch_head(url, branch, timeout=30, allow_local=False)
    assert not started  # refused before git ran
