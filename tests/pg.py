"""A throwaway PostgreSQL server for the tests: initdb into a temp dir, start, stop, restart.

Standard library only (no pytest-postgresql, no driver): the server's own binaries do the work,
psql runs the few admin statements, so this module never touches the caller's event loop.
The tests' fixtures (tests/conftest.py: pg_cluster, pg_url) are built on it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

StopMode = Literal["smart", "fast", "immediate"]

MISSING_SERVER = "PostgreSQL 15 server binaries not found: install postgresql-15 (.ci/run does)"
# The server binaries this module runs (psql comes with them: postgresql-15 depends on its client).
_NEEDED = ("initdb", "pg_ctl", "postgres", "psql")
# PostgreSQL's limit on identifiers; names are also kept to [a-z0-9_] so they need no quoting.
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_SUPERUSER = "postgres"
_DEBIAN_ROOT = Path("/usr/lib/postgresql")  # Debian's /usr/lib/postgresql/<major>/bin


def find_bindir() -> Path:
    """The directory of initdb/pg_ctl/postgres: `pg_config --bindir`, else the newest Debian one.

    pg_config alone proves nothing: Debian's libpq-dev ships it, naming a bindir that holds no
    server until postgresql-15 is installed. So every candidate is checked for the binaries.
    """
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
            if out:
                candidates.append(Path(out))

    def major(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (0,)

    candidates += sorted(_DEBIAN_ROOT.glob("*/bin"), key=major, reverse=True)
    for bindir in candidates:
        if all(os.access(bindir / name, os.X_OK) for name in _NEEDED):
            return bindir
    looked = ", ".join(str(c) for c in candidates) or f"no pg_config, no {_DEBIAN_ROOT}/*/bin"
    raise RuntimeError(f"{MISSING_SERVER} (looked in: {looked})")


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PgCluster:
    """One PostgreSQL server in a fresh temp dir, listening on 127.0.0.1:<free port>.

        cluster = PgCluster(); cluster.start()
        url = cluster.create_database("t_x")  # postgresql://postgres@127.0.0.1:<port>/t_x
        cluster.restart()                      # same port, same data: the URL stays valid
        cluster.stop()                         # and the temp dir is gone

    Run as root (as the tests are), the server runs as the `postgres` user: initdb refuses root.
    """

    host = "127.0.0.1"

    def __init__(self, bindir: Path | None = None, base_dir: str | None = None) -> None:
        self.bindir = bindir or find_bindir()
        # As root the temp dir must be reachable by `postgres`: /tmp is, $TMPDIR may not be.
        self._base_dir = base_dir or ("/tmp" if os.geteuid() == 0 else None)
        self.root: Path | None = None  # the temp dir: data dir, socket, log
        self.port = 0
        self._owner_pid = 0  # the process whose atexit hook may stop the server
        self._started = False  # once started, the port is fixed (clients know it)

    # -- where things are ------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self._root / "data"

    @property
    def log_file(self) -> Path:
        return self._root / "postgres.log"

    @property
    def _root(self) -> Path:
        if self.root is None:
            raise RuntimeError("PgCluster is not initialised: call start() first")
        return self.root

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{_SUPERUSER}@{self.host}:{self.port}/{dbname}"

    def version(self) -> str:
        """`postgres --version`, e.g. 'postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)'."""
        return self._run([str(self.bindir / "postgres"), "--version"]).stdout.strip()

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Create the cluster on first call, then start it (a no-op when it is running)."""
        try:
            if self.root is None:
                self._init()
            elif self.is_running():
                return
            self._pg_ctl_start()
        except BaseException:
            if not self._started:
                self.stop()  # nothing of a cluster that never ran is worth keeping
            raise

    def stop(self, mode: StopMode = "fast", *, cleanup: bool = True) -> None:
        """Stop the server; with cleanup (the default) also delete the temp dir and data.

        cleanup=False keeps the data dir, so start() brings the same cluster back on the
        same port (an outage a test controls).
        """
        if self.root is None:
            return
        try:
            if self.is_running():
                self._pg_ctl("stop", "-m", mode)
        finally:
            if cleanup:
                shutil.rmtree(self.root, ignore_errors=True)
                self.root = None
                self._started = False
                atexit.unregister(self._atexit_stop)

    def restart(self, mode: StopMode = "fast", *, down_for: float = 0.0) -> None:
        """Stop (clients are disconnected), stay down `down_for` seconds, start on the same port.

        It blocks: from a test whose bot runs in the same event loop, use `await arestart()`
        so the bot keeps running (and sees the outage) meanwhile.
        """
        self.stop(mode, cleanup=False)
        if down_for > 0:
            time.sleep(down_for)
        self.start()

    async def arestart(self, mode: StopMode = "fast", *, down_for: float = 0.0) -> None:
        """restart() in a worker thread, leaving the running event loop free."""
        await asyncio.to_thread(self.restart, mode, down_for=down_for)

    def is_running(self) -> bool:
        if self.root is None or not self.data_dir.exists():
            return False
        # pg_ctl status: 0 running, 3 not running, 4 no data dir.
        return self._pg_ctl("status", check=False).returncode == 0

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- databases --------------------------------------------------------------------------

    def create_database(self, name: str) -> str:
        """CREATE DATABASE `name`; returns its URL."""
        self._sql(f"CREATE DATABASE {_checked(name)}")
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop `name` (if it exists), first ending the connections a test left open."""
        self._sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            f" WHERE datname = '{_checked(name)}' AND pid <> pg_backend_pid()",
            # WITH (FORCE) too: a client reconnecting between the two statements is ended as well.
            f"DROP DATABASE IF EXISTS {_checked(name)} WITH (FORCE)",
        )

    # -- internals --------------------------------------------------------------------------

    def _init(self) -> None:
        root = Path(tempfile.mkdtemp(prefix="pgtest-", dir=self._base_dir))
        # mkdtemp makes it 0700 root-only; the server (as postgres) writes its socket and log here.
        root.chmod(0o755)
        if os.geteuid() == 0:
            shutil.chown(root, _SUPERUSER, _SUPERUSER)
        self.root = root
        # Registered now, not after the first start: a failed start must not leave the dir.
        self._owner_pid = os.getpid()
        atexit.register(self._atexit_stop)
        initdb = [str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", _SUPERUSER]
        initdb += ["--auth=trust", "-E", "UTF8", "--no-sync"]  # --no-sync: test data only
        # C.UTF-8: byte-order collation like C, but lower()/upper() know Cyrillic and Azerbaijani.
        done = self._run([*initdb, "--locale=C.UTF-8"], check=False)
        if done.returncode != 0:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            done = self._run([*initdb, "--locale=C"], check=False)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\ninclude 'pgtest.conf'\n")
        self._configure(free_port())

    def _configure(self, port: int) -> None:
        self.port = port
        settings = {
            "port": str(port),
            "listen_addresses": "'127.0.0.1'",
            # Our own socket dir: no clash with a system cluster's /var/run/postgresql.
            "unix_socket_directories": f"'{self._root}'",
            "max_connections": "200",
            # Test-only speed-ups: a crash may lose the data, which a test cluster can afford.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        text = "".join(f"{key} = {value}\n" for key, value in settings.items())
        (self.data_dir / "pgtest.conf").write_text(text)
        if os.geteuid() == 0:
            shutil.chown(self.data_dir / "pgtest.conf", _SUPERUSER, _SUPERUSER)

    def _pg_ctl_start(self) -> None:
        for attempt in range(3):
            done = self._pg_ctl("start", "-l", str(self.log_file), "-t", "60", check=False)
            if done.returncode == 0:
                break
            log = self._log_tail()
            # The free port can be taken between picking and binding; pick another on the
            # first start only (a restart must keep the port its clients know).
            if not self._started and attempt < 2 and "could not bind" in log:
                self._configure(free_port())
                continue
            raise RuntimeError(
                f"pg_ctl start failed ({done.returncode}) on port {self.port}:\n"
                f"{done.stdout}{done.stderr}--- {self.log_file} ---\n{log}"
            )
        self._started = True

    def _atexit_stop(self) -> None:
        # A forked child inherits the hook: only the process that started the server stops it.
        if os.getpid() == self._owner_pid:
            with contextlib.suppress(Exception):
                self.stop("immediate")

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._run(
            [str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-w", *args], check=check
        )

    def _sql(self, *statements: str) -> None:
        # One psql, one -c per statement: each runs on its own, outside a transaction block
        # (CREATE/DROP DATABASE refuse to run inside one).
        cmd = [str(self.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"]
        cmd += ["-h", self.host, "-p", str(self.port), "-U", _SUPERUSER, "-d", "postgres"]
        for statement in statements:
            cmd += ["-c", statement]
        done = self._run(cmd, as_server=False, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"psql failed ({done.returncode}): {statements}\n{done.stderr}")

    def _run(
        self, cmd: list[str], *, as_server: bool = True, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        # PG* variables of the caller's shell (PGPORT, PGDATA, PGHOST…) must not redirect us.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGCONNECT_TIMEOUT"] = "10"
        user = None
        if as_server and os.geteuid() == 0:
            user = _SUPERUSER  # initdb and the server refuse to run as root
            env["HOME"] = str(self.root or "/")
        done = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            env=env,
            # cwd: a directory the postgres user can enter (initdb/pg_ctl complain otherwise).
            cwd=self.root or "/",
            user=user,
            group=user,
            extra_groups=[] if user else None,
            timeout=120,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
            )
        return done

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _checked(name: str) -> str:
    """`name` as a bare SQL identifier; refuses anything needing quotes (or an injection)."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"database name must match {_NAME.pattern}: {name!r}")
    return name
