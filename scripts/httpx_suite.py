"""Run httpx 0.28.1's own client tests against klayengo, on httpx and on httpx2.

Usage::

    python scripts/httpx_suite.py            # all four configurations
    python scripts/httpx_suite.py --full     # also print every test's row

httpx's tests are httpx's code, so they are not in this repository: the first run
downloads httpx's sdist from PyPI (``pip download``) into ``.work/httpx-suite/``
(gitignored) and keeps only its ``tests/`` and ``pyproject.toml``. Their test
dependencies that are missing (trustme, chardet, socksio, ...) are installed into the
running interpreter's environment with pip.

Each configuration runs in its own subprocess (this script, with ``--child``):

``httpx``
    plain httpx;
``klayengo``
    ``httpx.Client`` / ``httpx.AsyncClient`` replaced by ``klayengo.ResilientClient``
    / ``klayengo.AsyncResilientClient`` before pytest starts, so every client their
    tests construct is klayengo's, with klayengo's default policies (retry and
    breaker on) and metrics into a fresh registry per client;
``httpx2``
    plain httpx2 through ``httpx2.alias_httpx()``, called before anything imports
    httpx, so their ``import httpx`` is httpx2;
``klayengo-httpx2``
    the alias, with the clients replaced by ``klayengo.httpx2``'s.

The child runs pytest with httpx's own configuration (warnings are errors), without
their ``network`` tests, with every ``@pytest.mark.anyio`` test on asyncio and trio,
and with a guard that refuses any connection or name lookup beyond the loopback
interface (their server fixture listens on 127.0.0.1:8000, as upstream).

The script prints the counts per configuration, the tests whose outcome differs
between configurations, and, per flavour, the tests that fail with klayengo but pass
without it. It exits 1 if such a test is not in :data:`ALLOWED`, 2 if a configuration
could not run at all.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

HTTPX_VERSION = "0.28.1"
ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".work" / "httpx-suite"
SUITE = WORK / f"httpx-{HTTPX_VERSION}"

#: Their test modules that construct clients through ``httpx.Client`` /
#: ``httpx.AsyncClient``. (``tests/test_api.py`` goes through ``httpx.get`` and
#: friends, which build httpx's own client class directly: nothing to compare.)
TEST_PATHS = (
    "tests/client",
    "tests/test_asgi.py",
    "tests/test_auth.py",
    "tests/test_multipart.py",
    "tests/test_timeouts.py",
    "tests/test_utils.py",
    "tests/test_wsgi.py",
)

#: What their tests import that klayengo's test extra may lack: module -> package.
#: Installed into this environment when missing; none changes what httpx does.
REQUIREMENTS = {
    "trustme": "trustme",
    "cryptography": "cryptography",
    "socksio": "socksio",
    "uvicorn": "uvicorn",
    "trio": "trio",
    "anyio": "anyio",
    "pytest_timeout": "pytest-timeout",
}
#: What httpx 0.28.1's own test environment has (its requirements.txt installs
#: ``-e .[brotli,cli,http2,socks,zstd]`` and pins chardet and uvicorn), installed
#: into the harness's own directory, on the children's path only: brotli and
#: zstandard change the ``Accept-Encoding`` every httpx client of this environment
#: sends; newer uvicorn releases log access lines their logging tests do not expect,
#: and pytest 9's ``caplog`` also captures loggers that do not propagate (uvicorn's).
PINNED = ("brotli", "zstandard", "chardet==5.2.0", "uvicorn==0.32.1", "pytest==8.3.4")
SITE = WORK / "site"

#: name -> (flavour, klayengo's clients?)
CONFIGS = {
    "httpx": ("httpx", False),
    "klayengo": ("httpx", True),
    "httpx2": ("httpx2", False),
    "klayengo-httpx2": ("httpx2", True),
}
#: Each klayengo configuration and the plain one it is compared with.
PAIRS = (("klayengo", "httpx"), ("klayengo-httpx2", "httpx2"))

#: Tests allowed to fail with klayengo only, each with the reason; a parametrised
#: test is named without its parameters. Only tests that read a client's private
#: internals belong here. klayengo wraps every transport httpx would use (the
#: client's own, each mount, each proxy) in its stack, so ``client._transport``, each
#: ``client._mounts`` value and what ``client._transport_for_url(url)`` returns is a
#: klayengo stack top, whose ``.inner`` is the transport httpx would have used there
#: (the routing itself is httpx's, unchanged).
_STACK = (
    "calls the private client._transport_for_url(url) and expects httpx's transport;"
    " with klayengo it returns the stack top over that transport (stack.inner)"
)
ALLOWED: dict[str, str] = {
    "tests/client/test_proxies.py::test_socks_proxy": (
        _STACK + ", then asserts isinstance(..., httpx.HTTPTransport) and reads its _pool"
    ),
    "tests/client/test_proxies.py::test_transport_for_request": (
        _STACK + ", then asserts isinstance(..., httpx.HTTPTransport) and reads"
        " its _pool._proxy_url"
    ),
    "tests/client/test_proxies.py::test_proxies_environ": (
        _STACK + ", then reads its _pool._proxy_url"
    ),
    "tests/client/test_proxies.py::test_proxy_with_mounts": (
        _STACK + ", then compares it with == to the HTTPTransport it mounted"
    ),
}


def allowed(test: str) -> str | None:
    """Why ``test`` may fail with klayengo only, or None."""
    return ALLOWED.get(test) or ALLOWED.get(test.split("[", 1)[0])


STATUSES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
FAILED = ("failed", "error")
PORT = 8000  # their server fixture's (uvicorn's default), hard-coded in their tests


# -- the parent: fetch, install, run, compare -----------------------------------------
def fetch_suite() -> None:
    """Put httpx's tests/ and pyproject.toml under SUITE, from its sdist on PyPI."""
    if (SUITE / "tests" / "conftest.py").is_file():
        return
    WORK.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WORK) as download:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--no-binary", ":all:", f"httpx=={HTTPX_VERSION}", "-d", download],
            check=True,
        )  # fmt: skip
        (sdist,) = Path(download).glob("httpx-*.tar.gz")
        prefix = f"httpx-{HTTPX_VERSION}/"
        with tarfile.open(sdist) as archive:
            # Only the tests and their configuration: with httpx's own package source
            # beside them, `import httpx` in their tests could find that copy instead
            # of the library under test.
            members = [
                m
                for m in archive.getmembers()
                if m.name.startswith(prefix + "tests/") or m.name == prefix + "pyproject.toml"
            ]
            archive.extractall(WORK, members=members, filter="data")
    if not (SUITE / "tests" / "conftest.py").is_file():
        raise SystemExit(f"httpx {HTTPX_VERSION}'s sdist has no tests/conftest.py")


def install_requirements() -> None:
    import importlib.util

    missing = [pkg for mod, pkg in REQUIREMENTS.items() if importlib.util.find_spec(mod) is None]
    if missing:
        print(f"installing their test dependencies: {' '.join(missing)}", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *missing], check=True)
    marker = SITE / "klayengo-pinned.txt"
    if not marker.is_file() or marker.read_text().split() != list(PINNED):
        print(f"installing into {SITE.relative_to(ROOT)}: {' '.join(PINNED)}", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--upgrade",
             "--target", str(SITE), *PINNED],
            check=True,
        )  # fmt: skip
        marker.write_text("\n".join(PINNED))


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def run_config(name: str, pytest_args: list[str], timeout: float) -> dict[str, dict[str, str]]:
    """Run one configuration in a subprocess; its outcomes by test id."""
    if not port_free(PORT):
        raise RuntimeError(f"127.0.0.1:{PORT} is in use: their server fixture needs it")
    out = WORK / f"outcomes-{name}.json"
    out.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--out", str(out)]
    command += ["--", *pytest_args]
    log = WORK / f"pytest-{name}.log"
    print(f"[{name}] running (log: {log.relative_to(ROOT)})", flush=True)
    env = {k: v for k, v in os.environ.items() if k != "KLAYENGO_FLAVOUR"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SITE), env.get("PYTHONPATH")]))
    with log.open("w") as sink:
        proc = subprocess.run(
            command, cwd=SUITE, env=env, stdout=sink, stderr=subprocess.STDOUT, timeout=timeout
        )
    if not out.is_file():
        raise RuntimeError(f"[{name}] wrote no outcomes (exit {proc.returncode}); see {log}")
    outcomes: dict[str, dict[str, str]] = json.loads(out.read_text())
    return outcomes


def summary(outcomes: dict[str, dict[str, str]]) -> Counter[str]:
    return Counter(entry["outcome"] for entry in outcomes.values())


def print_report(results: dict[str, dict[str, dict[str, str]]], full: bool) -> int:
    names = list(results)
    print("\nCounts per configuration:")
    print(f"  {'configuration':<16}" + "".join(f"{s:>9}" for s in STATUSES) + f"{'total':>8}")
    for name in names:
        counts = summary(results[name])
        row = "".join(f"{counts.get(s, 0):>9}" for s in STATUSES)
        print(f"  {name:<16}{row}{sum(counts.values()):>8}")

    every = sorted(set().union(*(set(r) for r in results.values())))
    rows = []
    for test in every:
        cells = [results[n].get(test, {}).get("outcome", "-") for n in names]
        if full or len(set(cells)) > 1:
            rows.append((test, cells))
    width = max([len(t) for t, _ in rows] + [4])
    title = "Every test" if full else "Tests whose outcome differs between configurations"
    print(f"\n{title} ({len(rows)}):")
    print(f"  {'test':<{width}}" + "".join(f"  {n:<15}" for n in names))
    for test, cells in rows:
        print(f"  {test:<{width}}" + "".join(f"  {c:<15}" for c in cells))

    unexpected = 0
    for ours, plain in PAIRS:
        if ours not in results or plain not in results:
            continue
        only = [
            t
            for t, entry in results[ours].items()
            if entry["outcome"] in FAILED and results[plain].get(t, {}).get("outcome") == "passed"
        ]
        print(f"\n{ours}: failing with klayengo, passing on plain {plain} ({len(only)}):")
        for test in sorted(only):
            reason = allowed(test)
            tag = "allowed" if reason else "UNEXPECTED"
            unexpected += reason is None
            print(f"  [{tag}] {test}")
            print(f"      {results[ours][test].get('message', '')[:300]}")
            if reason:
                print(f"      allowed because: {reason}")
        missing = sorted(set(results[plain]) - set(results[ours]))
        if missing:
            # A test id that only the plain run has: collection itself differs.
            unexpected += len(missing)
            print(f"  [UNEXPECTED] not run with klayengo: {', '.join(missing)}")
        better = [
            t
            for t, entry in results[ours].items()
            if entry["outcome"] == "passed" and results[plain].get(t, {}).get("outcome") in FAILED
        ]
        if better:
            print(
                f"  (passing with klayengo, failing on plain {plain}: {', '.join(sorted(better))})"
            )
        stale = sorted(a for a in ALLOWED if not any(a == t.split("[", 1)[0] for t in only))
        if stale:
            print(f"  (allow-listed but not failing here: {', '.join(stale)})")
    return unexpected


def parent(args: argparse.Namespace) -> int:
    fetch_suite()
    install_requirements()
    pytest_args = [
        f"--rootdir={SUITE}",
        "-c",
        str(SUITE / "pyproject.toml"),
        "-p",
        "no:cacheprovider",
        "-p",
        "no:respx",  # not one of their plugins; it would import httpx at load time
        "-m",
        "not network",
        # httpx2 and klayengo import anyio (a pytest plugin) before pytest starts.
        "-W",
        "ignore:Module already imported so cannot be rewritten:pytest.PytestAssertRewriteWarning",
        f"--timeout={args.timeout}",
        "-q",
        *TEST_PATHS,
        *args.pytest_args,
    ]
    results: dict[str, dict[str, dict[str, str]]] = {}
    broken = False
    for name in args.configs or list(CONFIGS):
        try:
            results[name] = run_config(name, pytest_args, timeout=args.run_timeout)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"[{name}] could not run: {exc}", file=sys.stderr)
            broken = True
            continue
        if not results[name]:
            print(f"[{name}] ran no test", file=sys.stderr)
            broken = True
    unexpected = print_report(results, args.full)
    if broken:
        return 2
    if unexpected:
        print(f"\n{unexpected} klayengo-only failure(s) outside the allow-list.")
        return 1
    print("\nNo klayengo-only failure outside the allow-list.")
    return 0


# -- the child: one configuration, in its own process ---------------------------------
def guard_network() -> None:
    """Refuse every name lookup and connection beyond the loopback interface."""
    import ipaddress

    def local(host: Any) -> bool:
        if host is None:
            return True
        if isinstance(host, bytes):
            host = host.decode("ascii", "replace")
        host = str(host).strip("[]").lower()
        if host == "localhost" or host.endswith(".localhost"):
            return True
        try:
            return ipaddress.ip_address(host.split("%")[0]).is_loopback
        except ValueError:
            return False

    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not local(host):
            raise socket.gaierror(socket.EAI_NONAME, f"{host!r}: refused by the harness")
        return real_getaddrinfo(host, *args, **kwargs)

    def checked(real: Any) -> Any:
        def connect(self: socket.socket, address: Any) -> Any:
            if self.family in (socket.AF_INET, socket.AF_INET6) and not local(address[0]):
                raise OSError(101, f"{address!r}: refused by the harness")
            return real(self, address)

        return connect

    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
    socket.socket.connect = checked(socket.socket.connect)  # type: ignore[method-assign]
    socket.socket.connect_ex = checked(socket.socket.connect_ex)  # type: ignore[method-assign]


def replace_clients(flavour: str) -> None:
    """Make ``httpx.Client`` / ``httpx.AsyncClient`` klayengo's clients."""
    import httpx
    import prometheus_client

    if flavour == "httpx2":
        import klayengo.httpx2 as surface
    else:
        import klayengo as surface  # type: ignore[no-redef]

    # Bound before the patch below: klayengo's clients subclass the library's own.
    sync_base, async_base = surface.ResilientClient, surface.AsyncResilientClient

    # Named as httpx's: their parametrised tests take their ids from the class names.
    class Client(sync_base):  # type: ignore[misc, valid-type]
        def __init__(self, **kwargs: Any) -> None:
            # A registry per client: their tests build hundreds of clients.
            kwargs.setdefault("metrics", prometheus_client.CollectorRegistry())
            super().__init__(**kwargs)

    class AsyncClient(async_base):  # type: ignore[misc, valid-type]
        def __init__(self, **kwargs: Any) -> None:
            kwargs.setdefault("metrics", prometheus_client.CollectorRegistry())
            super().__init__(**kwargs)

    httpx.Client = Client  # type: ignore[misc]
    httpx.AsyncClient = AsyncClient  # type: ignore[misc]


class Recorder:
    """Collects one outcome (and the failure's one-line message) per test id."""

    def __init__(self) -> None:
        self.outcomes: dict[str, dict[str, str]] = {}

    def _set(self, nodeid: str, outcome: str, report: Any) -> None:
        entry = {"outcome": outcome}
        crash = getattr(report.longrepr, "reprcrash", None)
        if crash is not None:
            entry["message"] = crash.message.replace("\n", " ")
        elif report.longrepr is not None and outcome != "passed":
            entry["message"] = str(report.longrepr).strip().splitlines()[-1]
        self.outcomes[nodeid] = entry

    def pytest_runtest_logreport(self, report: Any) -> None:
        known = self.outcomes.get(report.nodeid, {}).get("outcome")
        if report.when == "call":
            if hasattr(report, "wasxfail"):
                self._set(report.nodeid, "xfailed" if report.skipped else "xpassed", report)
            else:
                self._set(report.nodeid, report.outcome, report)
        elif report.when == "setup" and report.skipped:
            self._set(report.nodeid, "skipped", report)
        elif report.failed and known != "failed":
            self._set(report.nodeid, "error", report)

    def pytest_collectreport(self, report: Any) -> None:
        if report.failed:
            self._set(report.nodeid, "error", report)


class AnyioBackends:
    """Every ``@pytest.mark.anyio`` test on asyncio and trio (upstream: asyncio only).

    Registered from ``pytest_configure``, after anyio's plugin, so this fixture wins.
    """

    import pytest as _pytest

    @_pytest.fixture(params=["asyncio", "trio"])
    def anyio_backend(self, request: Any) -> str:
        return str(request.param)


class Backends:
    def pytest_configure(self, config: Any) -> None:
        config.pluginmanager.register(AnyioBackends(), "klayengo-anyio-backends")


def child(args: argparse.Namespace) -> int:
    flavour, ours = CONFIGS[args.child]
    if flavour == "httpx2":
        import httpx2

        httpx2.alias_httpx()  # before anything imports httpx, as a migrating app does
    guard_network()
    if ours:
        replace_clients(flavour)
    import httpx
    import pytest

    print(
        f"configuration {args.child}: httpx is {httpx.__name__} {httpx.__version__},"
        f" pytest {pytest.__version__}"
    )
    mro = httpx.Client.__mro__[:3]
    print("httpx.Client: " + " < ".join(f"{c.__module__}.{c.__qualname__}" for c in mro))
    recorder = Recorder()
    code = pytest.main(args.pytest_args, plugins=[recorder, Backends()])
    Path(args.out).write_text(json.dumps(recorder.outcomes, indent=1, sort_keys=True))
    return int(code)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", choices=list(CONFIGS), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument(
        "--config", dest="configs", action="append", choices=list(CONFIGS),
        help="run only this configuration (repeatable; default: all four)",
    )  # fmt: skip
    parser.add_argument("--full", action="store_true", help="print every test's row")
    parser.add_argument("--timeout", type=int, default=120, help="per-test timeout (s)")
    parser.add_argument("--run-timeout", type=float, default=1800, help="per-run timeout (s)")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments, after --")
    args = parser.parse_args()
    return child(args) if args.child else parent(args)


if __name__ == "__main__":
    sys.exit(main())
