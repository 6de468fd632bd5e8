"""A throwaway PostgreSQL server for the tests and the benchmarks, and the pytest fixture that serves it.

    pytest_plugins = ["pg_server"]          # in tests/conftest.py: the fixture for every test module

``postgres_url`` (session scope) starts one server for the whole session on a free loopback port, in a
fresh directory under the system temp dir, and yields its URL (``postgresql://postgres@127.0.0.1:PORT/
postgres``, trust authentication); the server is stopped (``pg_ctl -m fast``) and its directory removed
at the end. ``isolated_url(url)`` gives a test its own schema in that server (``search_path`` set in the
URL) and drops it afterwards, so tests do not see each other's tables.

The server programs come from ``$WIPPY_PG_BIN`` if set, else the newest ``/usr/lib/postgresql/*/bin``
(Debian's layout), else ``initdb`` on ``PATH``. If none is found the fixture FAILS, saying to run
``scripts/ensure-postgres.sh``: a PostgreSQL test never skips silently.

As root (``initdb`` refuses to run as root) the server runs as the ``postgres`` user through ``runuser``,
in a directory owned by that user; as any other user, it runs as that user. ``start_postgres`` is also
what ``bench/bench_store.py`` uses (with ``fsync`` on; the tests' server runs with ``fsync=off``: they
measure nothing and test no power loss).

Threads: the fixture runs on pytest's thread; ``shared_postgres`` is guarded by a lock and counts its
users, so a second fixture definition (a test module that defines its own) reuses the same server.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ENSURE_SCRIPT = "scripts/ensure-postgres.sh"
_schemas = itertools.count(1)


class PostgresNotFound(RuntimeError):
    """No PostgreSQL server programs (initdb, pg_ctl) were found on this machine."""


def find_bin_dir() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``; :class:`PostgresNotFound` when there is none."""
    env = os.environ.get("WIPPY_PG_BIN")
    if env:
        d = Path(env)
        if (d / "initdb").is_file() and (d / "pg_ctl").is_file():
            return d
        raise PostgresNotFound(
            f"WIPPY_PG_BIN={env} holds no initdb and pg_ctl: point it at PostgreSQL's bin directory, or unset it "
            f"and run {ENSURE_SCRIPT}"
        )

    def version(p: str) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", p.split("/")[4]))

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        d = Path(on_path).resolve().parent
        if (d / "pg_ctl").is_file():
            return d
    raise PostgresNotFound(
        "PostgreSQL's server programs were not found (no /usr/lib/postgresql/*/bin/initdb, no initdb on PATH): "
        f"run {ENSURE_SCRIPT} (it installs Debian's postgresql package), or set WIPPY_PG_BIN to the directory "
        "holding initdb and pg_ctl"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    """A running throwaway server: ``url`` to connect, ``stop()`` to end it and remove its files."""

    url: str
    port: int
    base: Path
    bin_dir: Path
    run_as: list[str]

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.base / "server.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def stop(self) -> None:
        """Stop the server (fast shutdown, immediate if that fails) and remove its directory."""
        pg_ctl = [*self.run_as, str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-w", "-t", "30"]
        try:
            r = subprocess.run([*pg_ctl, "-m", "fast", "stop"], capture_output=True, text=True, timeout=60)
            if r.returncode != 0 and "not running" not in (r.stderr + r.stdout):
                subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True, text=True, timeout=60)
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


def start_postgres(*, fsync: bool = True, timeout: float = 60.0) -> PostgresServer:
    """Start a fresh server on a free port of 127.0.0.1 and return it once it accepts connections.

    Raises :class:`PostgresNotFound` when PostgreSQL is not installed and RuntimeError (with the server's
    log) when it does not start. ``fsync=False`` trades durability for speed (tests).
    """
    bin_dir = find_bin_dir()
    base = Path(tempfile.mkdtemp(prefix="wippy-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(base, ignore_errors=True)
            raise PostgresNotFound(
                f"initdb refuses to run as root and there is no 'postgres' user: run {ENSURE_SCRIPT}"
            ) from None
        os.chown(base, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data = base / "data"
    r = subprocess.run(
        [*run_as, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
         "--no-locale", "--no-sync"],
        capture_output=True, text=True, timeout=timeout,
    )
    if r.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"initdb failed ({bin_dir / 'initdb'}):\n{r.stdout}\n{r.stderr}")
    last_error = ""
    for _attempt in range(3):  # the free port may be taken between the probe and the bind: try another
        port = _free_port()
        opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1"
        if not fsync:
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        server = PostgresServer(f"postgresql://postgres@127.0.0.1:{port}/postgres", port, base, bin_dir, run_as)
        r = subprocess.run(
            [*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-w",
             "-t", str(int(timeout)), "-o", opts, "start"],
            capture_output=True, text=True, timeout=timeout + 10,
        )
        if r.returncode == 0:
            return server
        last_error = f"{r.stdout}\n{r.stderr}\n{server.log_tail()}"
        if "could not bind" not in last_error and "already in use" not in last_error:
            break
    shutil.rmtree(base, ignore_errors=True)
    raise RuntimeError(f"the PostgreSQL server did not start ({bin_dir / 'pg_ctl'}):\n{last_error}")


_lock = threading.Lock()
_shared: PostgresServer | None = None
_users = 0


@contextlib.contextmanager
def shared_postgres(*, fsync: bool = False) -> Iterator[PostgresServer]:
    """One server per process, started by the first user and stopped when the last one leaves."""
    global _shared, _users
    with _lock:
        if _shared is None:
            _shared = start_postgres(fsync=fsync)
        _users += 1
        server = _shared
    try:
        yield server
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _shared is not None:
                _shared.stop()
                _shared = None


def serve_url() -> Iterator[str]:
    """The body of a session fixture: yield the shared server's URL; FAIL (never skip) without PostgreSQL."""
    try:
        cm = shared_postgres()
        server = cm.__enter__()
    except PostgresNotFound as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server.url
    finally:
        cm.__exit__(None, None, None)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The URL of a throwaway PostgreSQL server for the session; FAILS (never skips) without PostgreSQL."""
    yield from serve_url()


def with_search_path(url: str, schema: str) -> str:
    """``url`` with ``options=-csearch_path=SCHEMA`` added to its query."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query)
    query.append(("options", f"-csearch_path={schema}"))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


@contextlib.contextmanager
def isolated_url(url: str) -> Iterator[str]:
    """A new empty schema in the server at ``url``; yields a URL whose ``search_path`` is that schema.

    The schema is dropped (with everything in it) afterwards: close every connection to it first.
    """
    import psycopg

    schema = f"t{os.getpid()}_{next(_schemas)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield with_search_path(url, schema)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
