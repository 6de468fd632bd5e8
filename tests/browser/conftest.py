"""Fixtures of the browser tests: a JupyterLab server and Debian's chromium per session, a page per test.

The server is this venv's JupyterLab (``sys.executable -m jupyterlab``, the ``lab`` extra) on a free
loopback port, without token or password, serving a temporary copy of ``notebooks/``. Every directory it
or its kernels would write to is temporary too: Jupyter's config, data and runtime dirs, Lab's settings and
workspaces, IPython's dir. ``WIPPY_DATA_DIR`` is removed from its environment, so each notebook's kernel
keeps its node's data in ``.wippy/<notebook>/`` beside the notebook copy: every notebook starts from an
empty registry, as under ``make test``'s nbval loop, and nothing lands in the repo or in ``~``.

The temporary config turns off Lab's news pop-up (the ``announcements`` plugin, through
``labconfig/page_config.json``) without touching the venv, and the temporary settings render every cell
(``windowingMode: none``), so the DOM holds every output the tests read.

Chromium runs headless through Playwright's sync API with ``executable_path`` (Playwright downloads no
browser). A failing test gets a screenshot of its page in its tmp dir, named in the report.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .helpers import CHROMIUM, LAUNCH_ARGS, REPO

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, ViewportSize

START_TIMEOUT = 60.0  # s for /api/status to answer (about 2.5 s here)
STOP_TIMEOUT = 15.0  # s for the server to shut its kernels down and exit after SIGTERM
VIEWPORT: ViewportSize = {"width": 1280, "height": 860}
KERNEL = "wippy"

# Lab's settings for the tests' user: every cell rendered (Lab 4's default windowing can leave cells that
# are out of view unrendered), and no news or update checks even if the announcements plugin came back.
_USER_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
}
_PAGE_CONFIG = {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}

_failure_screenshot = pytest.StashKey[Path]()
_page_errors = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives JupyterLab in Debian's chromium (tests/browser)")


@dataclass
class Lab:
    """A running JupyterLab server (see the module docstring); ``stop()`` ends it and its kernels."""

    url: str
    root: Path
    """The temporary copy of notebooks/ the server serves (its root_dir)."""
    runtime_dir: Path
    log: Path
    process: subprocess.Popen[bytes]

    def api(self, method: str, path: str) -> Any:
        """Call the server's REST API (``path`` like ``/api/sessions``); the decoded JSON, or None."""
        request = urllib.request.Request(self.url + path, method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def data_dir(self, notebook: str) -> Path:
        """Where the kernel of ``notebook`` keeps its node's data (registry, logs)."""
        return self.root / ".wippy" / Path(notebook).stem

    def shutdown_kernels(self) -> None:
        """End every session and kernel, so the next test's notebook starts on a fresh kernel."""
        for session in self.api("GET", "/api/sessions"):
            self.api("DELETE", f"/api/sessions/{session['id']}")
        for kernel in self.api("GET", "/api/kernels"):
            self.api("DELETE", f"/api/kernels/{kernel['id']}")

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        """Shut the kernels down, SIGTERM the server's process group (SIGKILL if it lingers), and check
        that no kernel of this server is left: jupyter_client starts kernels in sessions of their own, out
        of the server's group, so a kernel the server failed to stop would outlive it."""
        with contextlib.suppress(OSError):  # the server may be gone already: it is ended below either way
            self.shutdown_kernels()
        _killpg(self.process, signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            _killpg(self.process, signal.SIGKILL)
            self.process.wait()
        deadline = time.monotonic() + 5
        while (strays := _processes_mentioning(self.runtime_dir)) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in strays:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not strays, f"kernels outlived the JupyterLab server and were killed: pids {strays}"


def _killpg(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)  # start_new_session=True: the group's id is the server's pid


def _processes_mentioning(path: Path) -> list[int]:
    """Pids of live processes with ``path`` in their command line (kernels get ``-f <runtime dir>/...``)."""
    needle = os.fsencode(path)
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if needle in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return pids


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _prepare(base: Path) -> tuple[Path, dict[str, str]]:
    """The root dir (a copy of notebooks/) and the server's environment, all under ``base``."""
    root = base / "notebooks"
    shutil.copytree(REPO / "notebooks", root, ignore=shutil.ignore_patterns(".wippy", ".ipynb_checkpoints"))
    dirs = {name: base / name for name in ("config", "data", "runtime", "ipython", "settings", "workspaces")}
    for d in dirs.values():
        d.mkdir(mode=0o700)
    (dirs["config"] / "labconfig").mkdir()
    (dirs["config"] / "labconfig" / "page_config.json").write_text(json.dumps(_PAGE_CONFIG))
    for rel, settings in _USER_SETTINGS.items():
        path = dirs["settings"] / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings))
    env = dict(os.environ)
    env.pop("WIPPY_DATA_DIR", None)  # each notebook's kernel: .wippy/<notebook>/ in the temporary root
    env.update(
        JUPYTER_CONFIG_DIR=str(dirs["config"]),
        JUPYTER_DATA_DIR=str(dirs["data"]),
        JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
        JUPYTERLAB_SETTINGS_DIR=str(dirs["settings"]),
        JUPYTERLAB_WORKSPACES_DIR=str(dirs["workspaces"]),
        IPYTHONDIR=str(dirs["ipython"]),
    )
    return root, env


def _start(base: Path, root: Path, env: dict[str, str]) -> Lab:
    """Start the server on a free port (a new one if another process took it first); wait for /api/status."""
    for _attempt in range(3):
        port = _free_port()
        log = base / f"server-{port}.log"
        command = [
            sys.executable, "-m", "jupyterlab", "--no-browser", "--ip", "127.0.0.1", "--port", str(port),
            "--ServerApp.port_retries=0",  # fail rather than silently serve on another port
            "--ServerApp.token=", "--ServerApp.password=", "--allow-root",
            "--ServerApp.disable_check_xsrf=True",  # loopback, no auth: lets Lab.api() DELETE without a cookie
            f"--ServerApp.root_dir={root}",
            f"--LabApp.user_settings_dir={env['JUPYTERLAB_SETTINGS_DIR']}",
            f"--LabApp.workspaces_dir={env['JUPYTERLAB_WORKSPACES_DIR']}",
        ]  # fmt: skip
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, cwd=base, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        lab = Lab(f"http://127.0.0.1:{port}", root, Path(env["JUPYTER_RUNTIME_DIR"]), log, process)
        deadline = time.monotonic() + START_TIMEOUT
        while process.poll() is None and time.monotonic() < deadline:
            try:
                lab.api("GET", "/api/status")
                return lab
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        if process.poll() is None:
            lab.stop()
            pytest.fail(
                f"JupyterLab did not answer {lab.url}/api/status within {START_TIMEOUT:g} s; "
                f"its log ends with:\n{lab.log_tail()}"
            )
        process.wait()
        if "already in use" not in lab.log_tail():
            pytest.fail(
                f"JupyterLab exited with status {process.returncode} before answering; "
                f"its log ends with:\n{lab.log_tail()}"
            )
    pytest.fail("JupyterLab found no free port in 3 tries")


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The session's JupyterLab server (module docstring), with the ``wippy`` kernelspec checked."""
    if importlib.util.find_spec("jupyterlab") is None:
        pytest.fail(f"jupyterlab is not installed for {sys.executable}: pip install -e '.[dev,lab]'")
    base = tmp_path_factory.mktemp("lab")
    root, env = _prepare(base)
    server = _start(base, root, env)
    try:
        specs = server.api("GET", "/api/kernelspecs")["kernelspecs"]
        if KERNEL not in specs:
            pytest.fail(
                f"JupyterLab knows no {KERNEL!r} kernel (only {sorted(specs)}): "
                f"run `{sys.executable} -m wippy.kernel install --sys-prefix`"
            )
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Debian's chromium, headless, through Playwright (never a browser Playwright downloads)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/ensure-chromium.sh (make test does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"playwright is not installed for {sys.executable}: pip install -e '.[dev]'")
    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS, timeout=30_000)
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        playwright.stop()


@pytest.fixture
def page(browser: Browser, lab: Lab, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Page]:
    """A page in a fresh browser context (own cookies and storage) whose relative URLs go to ``lab``.

    After the test: the context is closed and every kernel shut down. If the test failed, the report
    names a screenshot of the page taken at that moment, and lists the page's JavaScript errors.
    """
    request.node.stash[_failure_screenshot] = tmp_path / "failure.png"
    errors = request.node.stash[_page_errors] = []
    context = browser.new_context(base_url=lab.url, viewport=VIEWPORT)
    context.set_default_timeout(30_000)
    try:
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        yield page
    finally:
        context.close()
        lab.shutdown_kernels()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On a failed browser test, while its page is still open: screenshot it into the test's tmp dir."""
    report = yield
    page = getattr(item, "funcargs", {}).get("page")
    if report.when == "call" and report.failed and page is not None:
        path = item.stash[_failure_screenshot]
        try:
            page.screenshot(path=path)
            report.sections.append(("browser", f"screenshot of the page at the failure: {path}"))
        except Exception as exc:  # a crashed page: the failure itself is what matters
            report.sections.append(("browser", f"no screenshot ({exc})"))
        if errors := item.stash.get(_page_errors, []):
            report.sections.append(("browser JavaScript errors", "\n".join(errors)))
    return report
