"""The README's walk-throughs, run as a newcomer runs them: in one shell, top to bottom, as written.

The service is started the way the README says (`make run`, which is `bash scripts/run.sh`), on a
port of its own with a SQLite file of its own and the real engine. Every ```bash block of the
walk-through sections is taken in order and run by one `bash`; the only change to the text is the
port in `BASE=http://localhost:5000`, and each `curl` call site is numbered, so that the status each
call answered is known. A call must succeed (2xx) unless its command announces another status in a
comment (`# → 409`); any other answer fails the test, naming the line.

Two settings differ from a bare `make run`: `WEBHOOK_ALLOW_PRIVATE_TARGETS=true`, because this machine
resolves no public name (the webhook example's `ops.example.com` would be refused as unresolvable);
no alert is raised in the walk-through, so nothing is ever sent to it. And `ALLOW_LOCAL_GIT_SOURCES=true`,
which the README's deploy straight from a repository asks for: its repository is a local one (no network).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy_service.runner.docker_runner import LABEL_MANAGED
from tests.helpers import ROOT, ProcessGroup, free_port, wait_for, wait_until

README = ROOT / "README.md"
# The sections whose bash blocks make the walk-through, in the README's order.
WALK_THROUGH = (
    "### curl walk-through",
    "### Deploying an agent, and watching it",
    "### Deploying straight from a repository",
    "### Releases and rollback",
    "### Jobs: agents that run to completion",
    "### API keys and calling an agent",
    "### Webhooks",
)
CURL = re.compile(r"(?<![\w-])curl ")
ANNOUNCED = re.compile(r"#\s*→\s*(\d{3})")
STATUS_LINE = re.compile(r"^README-STATUS (\d+) (\d{3})$", re.MULTILINE)
# Each numbered call site writes its status to stderr (curl's own `%{stderr}` write-out switch).
PRELUDE = """
__readme_curl() {
  local site="$1"; shift
  command curl -w "%{stderr}\\nREADME-STATUS $site %{http_code}\\n" "$@"
}
"""


def walk_through_blocks(text: str) -> list[str]:
    """The ```bash blocks of the walk-through sections, in order."""
    blocks: list[str] = []
    for heading in WALK_THROUGH:
        start = text.index("\n" + heading + "\n")
        end = text.find("\n## ", start + 1)
        following = text.find("\n### ", start + 1)
        section = text[start : min(i for i in (end, following, len(text)) if i != -1)]
        blocks += re.findall(r"```bash\n(.*?)```", section, re.DOTALL)
    return blocks


def numbered(script: str) -> tuple[str, list[tuple[int, str | None, str]]]:
    """The script with each `curl ` call site numbered, and per site its announced status and its line."""
    sites: list[tuple[int, str | None, str]] = []
    matches = list(CURL.finditer(script))
    for number, match in enumerate(matches):
        end = matches[number + 1].start() if number + 1 < len(matches) else len(script)
        announced = ANNOUNCED.search(script, match.end(), end)
        line = script[script.rfind("\n", 0, match.start()) + 1 : script.find("\n", match.start())]
        sites.append((number, announced.group(1) if announced else None, line.strip()))
    counter = iter(range(len(matches)))
    out = CURL.sub(lambda _match: f"__readme_curl {next(counter)} ", script)
    return out, sites


def test_numbering_reads_announcements() -> None:
    script = (
        "A=$(curl -s x \\\n  -d y | python3)   # → 409: taken\ncurl -s z\nfor i in 1; do curl -s w; done  # → 503\n"
    )
    out, sites = numbered(script)
    assert [(n, status) for n, status, _ in sites] == [(0, "409"), (1, None), (2, "503")]
    assert "__readme_curl 0 -s x" in out and "__readme_curl 2 -s w" in out


@pytest.fixture()
def service(tmp_path: Path, processes: ProcessGroup, docker_engine: Any) -> Iterator[str]:
    """`make run`'s script on a port of its own; returns its base URL."""
    port = free_port()
    namespace = f"ds-readme-{port}"
    env = {key: value for key, value in os.environ.items() if key not in {"DATABASE_URL", "SECRET_KEY"}}
    env.update(
        HOST="127.0.0.1",
        PORT=str(port),
        ENVIRONMENT="development",
        DATABASE_URL=f"sqlite:///{tmp_path / 'readme.db'}",
        ENGINE_NAMESPACE=namespace,
        WEBHOOK_ALLOW_PRIVATE_TARGETS="true",
        ALLOW_LOCAL_GIT_SOURCES="true",  # the repository deploy's block deploys a local repository, as it says
        VENV=sys.prefix,  # the virtualenv running the tests, so bootstrap.sh finds it made
        PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    )
    process = processes.spawn(["bash", "scripts/run.sh"], env=env, log=tmp_path / "service.log")
    base = f"http://127.0.0.1:{port}"
    wait_for(f"{base}/health", process, timeout=120)
    yield base
    # The walk-through deletes its deployment; wait for the reconciler to remove its containers.
    wait_until(
        lambda: not docker_engine.api.containers(all=True, filters={"label": f"{LABEL_MANAGED}={namespace}"}),
        60,
        what="the walk-through's containers removed",
    )


def test_the_readme_walk_through_runs_as_written(service: str, tmp_path: Path) -> None:
    blocks = walk_through_blocks(README.read_text())
    assert len(blocks) >= 4
    script = "\n".join(blocks).replace("http://localhost:5000", service)
    assert service in script, "the walk-through no longer sets BASE=http://localhost:5000"
    runnable, sites = numbered(script)
    (tmp_path / "walk-through.sh").write_text(PRELUDE + runnable)
    result = subprocess.run(
        ["bash", str(tmp_path / "walk-through.sh")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"},
        check=False,
    )
    answered: dict[int, list[str]] = {}
    for site, status in STATUS_LINE.findall(result.stderr):
        answered.setdefault(int(site), []).append(status)
    wrong = []
    for number, announced, line in sites:
        statuses = answered.get(number)
        if not statuses:
            wrong.append(f"never ran: {line}")
        elif announced is None and not all(status.startswith("2") for status in statuses):
            wrong.append(f"{statuses[-1]} but no status announced: {line}")
        elif announced is not None and statuses[-1] != announced:
            wrong.append(f"{statuses[-1]}, announced {announced}: {line}")
    assert not wrong, (
        "\n".join(wrong) + "\n--- stdout\n" + result.stdout[-4000:] + "\n--- stderr\n" + result.stderr[-4000:]
    )


def test_every_error_kind_is_in_the_readme() -> None:
    """The API overview lists the `error` kinds a client may meet; a kind added in errors.py is listed too."""
    source = (ROOT / "deploy_service" / "errors.py").read_text()
    kinds = set(re.findall(r'kind = "([a-z_]+)"', source)) | set(re.findall(r'\d{3}: "([a-z_]+)"', source))
    overview = README.read_text().split("## API overview", 1)[1].split("| Route |", 1)[0]
    assert len(kinds) > 12
    assert {kind for kind in kinds if f"`{kind}`" not in overview} == set()


def test_every_variable_the_scripts_read_is_in_the_readme_table() -> None:
    """A script's `${NAME:-default}` is a setting too: the configuration table lists it."""
    shell = [*(ROOT / "scripts").glob("*.sh"), ROOT / "tests" / "integration" / "images" / "build.sh"]
    read = {name for path in shell for name in re.findall(r"\$\{([A-Z][A-Z0-9_]*):-", path.read_text())}
    read |= set(re.findall(r'environ\.get\("([A-Z_]+)"', (ROOT / "gunicorn.conf.py").read_text()))
    inherited = {"TMPDIR", "VIRTUAL_ENV"}  # the system's own, not ours
    table = "\n".join(line for line in README.read_text().splitlines() if line.startswith("| `"))
    assert {name for name in read - inherited if f"`{name}`" not in table} == set()
