"""A throwaway PostgreSQL server for tests: initdb into a fresh directory, pg_ctl start on 127.0.0.1.

PostgreSQL refuses to run as root, and CI runs as root: then the server runs as a system user
(created if missing) through runuser, in a directory under /tmp that it owns (pytest's own tmp
directories are private to root, so that user could not enter them)."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

from tests.anvil import free_port

PG_USER = "statechannel-pg"
SUPERUSER = "tower"
START_TIMEOUT = 60


def pg_bin_dir() -> Path:
    """The newest server under /usr/lib/postgresql (Debian's layout), else whatever is on PATH."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: [int(x) for x in re.findall(r"\d+", p.parent.parent.name)],
    )
    if found:
        return found[-1].parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    raise RuntimeError("PostgreSQL not found: run `make install` (it installs the Debian package postgresql)")


def _ensure_user() -> None:
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(
            [
                shutil.which("useradd") or "/usr/sbin/useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                PG_USER,
            ],
            check=True,
            capture_output=True,
        )


class Postgres:
    """One server; `stop()` ends it and deletes its files."""

    def __init__(self) -> None:
        self.bin = pg_bin_dir()
        self.as_root = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="statechannel-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        if self.as_root:
            _ensure_user()
            shutil.chown(self.root, PG_USER, PG_USER)
        try:
            self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-sync")
            options = f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c full_page_writes=off"
            self._run(
                "pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", str(START_TIMEOUT),
                "-o", options, "start",
            )  # fmt: skip
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self.as_root:
            command = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", PG_USER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=START_TIMEOUT + 30, check=False)
        if done.returncode != 0:
            log = (self.root / "log").read_text() if (self.root / "log").exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr}{done.stdout}{log}")

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
