"""A private, throwaway PostgreSQL server for one test (the PostgreSQL-restart fault).

It finds the server binaries the way `scripts/with_postgres.sh` does (`PG_BINDIR`, then `pg_ctl` on
PATH, then the highest `/usr/lib/postgresql/*/bin`), runs `initdb` in a temporary directory and serves
on a free loopback port, with its socket in that directory. As root it runs as the `postgres` system
user (PostgreSQL refuses root), which `with_postgres.sh` and Debian's package create. `stop()` stops
only this server (by its data directory) and removes the directory.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def find_bindir() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres; None when PostgreSQL is not installed."""
    candidates: list[Path] = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(Path(os.environ["PG_BINDIR"]))
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        candidates.append(Path(os.path.realpath(pg_ctl)).parent)
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True)]
    for directory in candidates:
        if all((directory / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return directory
    return None


def _version(path: str) -> tuple[int, ...]:
    parts = Path(path).parent.name.split(".")
    return tuple(int(part) for part in parts if part.isdigit())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """initdb + pg_ctl start on 127.0.0.1:<free port>; `restart()` is `pg_ctl restart -m fast`; `halt()`
    and `resume()` stop it and start it again, for an outage as long as the test wants."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = _free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="faults-pg-"))
        self.datadir = self.workdir / "data"
        self.logfile = self.workdir / "server.log"
        self._as_root = os.geteuid() == 0
        if self._as_root:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                shutil.rmtree(self.workdir, ignore_errors=True)
                raise RuntimeError("PostgreSQL refuses to run as root and there is no `postgres` user") from None
            os.chown(self.workdir, user.pw_uid, user.pw_gid)
        self.started = False

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 90) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, cwd=self.workdir, capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            log = self.logfile.read_text() if self.logfile.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({result.returncode}): {result.stderr}\n{log[-3000:]}")

    def start(self) -> PostgresServer:
        self._run("initdb", "-D", str(self.datadir), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        self.started = True
        self._run(
            "pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-w", "-t", "60", "start", "-o", self._options()
        )
        return self

    def _pg_ctl(self, *args: str) -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-w", "-t", "60", *args)

    def _options(self) -> str:
        return (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.workdir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )

    def restart(self) -> None:
        """Stop (fast: every session is terminated) and start again on the same port."""
        self._run(
            "pg_ctl",
            "-D",
            str(self.datadir),
            "-l",
            str(self.logfile),
            "-w",
            "-t",
            "60",
            "restart",
            "-m",
            "fast",
            "-o",
            self._options(),
        )

    def halt(self) -> None:
        """Stop the server (fast: every session is terminated), keeping its data for `resume()`."""
        self._pg_ctl("stop", "-m", "fast")

    def resume(self) -> None:
        """Start the halted server again on the same port."""
        self._pg_ctl("start", "-o", self._options())

    def stop(self) -> None:
        try:
            if self.started and (self.datadir / "postmaster.pid").exists():
                self._pg_ctl("stop", "-m", "fast")
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)
