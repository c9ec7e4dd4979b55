"""A private PostgreSQL cluster for tests that stop and restart the database.

The machine's shared PostgreSQL serves everyone's tests, so a test that takes the database away
mid-burst gets a cluster of its own: `initdb` into a directory under /tmp (run as the `postgres`
OS user when the tests run as root, since initdb refuses root), trust authentication, loopback only,
a free port, and `pg_ctl` to stop (fast or immediate, i.e. a crash) and start it again on the same
port and data directory.

    with PrivatePostgres() as pg:
        url = pg.create_database("leadpush")
        ...
        pg.stop(mode="immediate")
        pg.start()
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from support.databases import unavailable
from support.servers import free_port

PG_BIN_DIRS = [
    os.environ.get("LEADPUSH_TEST_PG_BIN", ""),
    "/usr/lib/postgresql/15/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/17/bin",
    "/usr/lib/postgresql/14/bin",
]


def find_pg_bin() -> Path | None:
    for candidate in PG_BIN_DIRS:
        if candidate and (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


class PrivatePostgres:
    """A throwaway PostgreSQL cluster on a free loopback port (trust auth; fsync off, commits synchronous)."""

    def __init__(self, max_connections: int = 300) -> None:
        found = find_pg_bin()
        if found is None:
            unavailable("PostgreSQL server binaries (initdb, pg_ctl) are not installed; the restart test needs them")
        self.bin: Path = found
        # initdb refuses to run as root: then the cluster belongs to the `postgres` OS user.
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres and (shutil.which("runuser") is None or not _user_exists("postgres")):
            unavailable("running as root, a private PostgreSQL cluster needs the `postgres` OS user and runuser")
        self.port = free_port()
        self.max_connections = max_connections
        self.root = Path(tempfile.mkdtemp(prefix="leadpush-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        if self._as_postgres:
            shutil.chown(self.root, user="postgres", group=None)
            os.chmod(self.root, 0o755)
        self._initdb()

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def _initdb(self) -> None:
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )

    def start(self, timeout: float = 60) -> PrivatePostgres:
        options = (
            # fsync off is safe here: the tests crash the server process, never the machine. Commits stay
            # synchronous, so a crash loses nothing a client was told was committed.
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            f"-c full_page_writes=off -c max_connections={self.max_connections}"
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log_path),
            "-o",
            options,
            "-w",
            "-t",
            str(int(timeout)),
            "start",
            timeout=timeout + 10,
        )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres") as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: "fast" (clean shutdown, clients disconnected) or "immediate" (a crash)."""
        if not (self.data / "postmaster.pid").exists():
            return
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def destroy(self) -> None:
        try:
            self.stop(mode="immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        try:
            return self.start()
        except BaseException:
            self.destroy()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.destroy()
