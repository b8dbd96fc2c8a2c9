"""The Grafana dashboard and the rules against a real Prometheus.

A real ``prometheus`` on loopback (its own config and data directory, a free port,
1 s scrape and rule intervals) scrapes the ``/metrics`` of a real client that drives
traffic against :class:`klayengo.testing.Upstream` origins: retried failures, an open
breaker, rate-limit waits and rejections, a spent retry budget, cache hits. Then every
query of the dashboard is evaluated through the HTTP API (``/api/v1/query``), over all
hosts and host by host: no query may fail, none may come back empty or without a
number where the traffic made data. The rules load and evaluate without errors, and
the alerts the traffic calls for are pending.

Every wait is bounded; the Prometheus process is always stopped.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

import klayengo
from klayengo import (
    CachePolicy,
    CircuitBreakerPolicy,
    CircuitOpenError,
    HostPolicy,
    MetricsPolicy,
    RateLimitExceeded,
    RateLimitPolicy,
    ResilientClient,
    RetryPolicy,
)
from klayengo.testing import Cacheable, Fail, FailTimes, Healthy, Upstream

pytestmark = pytest.mark.slow

OBSERVABILITY = Path(__file__).resolve().parents[2] / "observability"
RULES = OBSERVABILITY / "prometheus" / "klayengo-rules.yml"
DASHBOARD = OBSERVABILITY / "grafana" / "klayengo-dashboard.json"
CLIENT = "observed"
JOB = "klayengo"
#: What the dashboard's variables become: Grafana's "All" (allValue) and a rate window
#: that covers the whole run.
ALL = ".*"
RATE_INTERVAL = "1m"
#: Bounds on every wait, in seconds.
STARTUP_TIMEOUT = 30.0
SCRAPE_TIMEOUT = 20.0
HTTP_TIMEOUT = 5.0
#: Requests of each kind per phase.
N = 4


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], timeout: float) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=HTTP_TIMEOUT)
        body = response.json()
        assert body.get("status") == "success", (path, params, body)
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data)
        return list(data["result"])

    def last_scrape(self) -> float:
        """When the klayengo target was last scraped successfully (unix s), else 0."""
        # timestamp() of a plain selector: of anything computed, it is the query's time.
        result = self.query(f'timestamp(up{{job="{JOB}"}}) and up{{job="{JOB}"}} == 1')
        return float(result[0]["value"][1]) if result else 0.0

    def wait_for_scrapes(self, after: float, count: int) -> None:
        """Wait until ``count`` scrapes have started after ``after`` (unix s)."""
        seen: set[float] = set()

        def scraped() -> bool:
            stamp = self.last_scrape()
            if stamp > after:
                seen.add(stamp)
            return len(seen) >= count

        wait_for(f"{count} scrapes", scraped, SCRAPE_TIMEOUT)


def start_prometheus(binary: str, tmp: Path, target: str) -> Prometheus:
    config = tmp / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "global": {
                    "scrape_interval": "1s",
                    "scrape_timeout": "1s",
                    "evaluation_interval": "1s",
                },
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {
                        "job_name": JOB,
                        "metrics_path": "/metrics",
                        "static_configs": [{"targets": [target]}],
                    }
                ],
            }
        )
    )
    for _ in range(3):  # the free port may be taken between the probe and the bind
        port = free_port()
        log = tmp / f"prometheus-{port}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp / f'data-{port}'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C in the terminal is pytest's alone
            )
        prometheus = Prometheus(f"http://127.0.0.1:{port}", process, log)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while process.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(f"{prometheus.url}/-/ready", timeout=1).status_code == 200:
                    return prometheus
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        stop(prometheus)
        if "address already in use" not in log.read_text(errors="replace"):
            break
    pytest.fail(f"prometheus did not start:\n{log.read_text(errors='replace')[-3000:]}")


def stop(prometheus: Prometheus) -> None:
    process = prometheus.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


# -- the traffic ---------------------------------------------------------------------------
ORIGINS = {
    "api": Healthy(),  # plain successes
    "flaky": None,  # every request fails once, then succeeds: one retry each
    "down": Fail(),  # trips its breaker, then rejected calls
    "budget": Fail(),  # retries refused: the retry budget is zero
    "limited": Healthy(),  # waits for the client-side rate limiter
    "strict": Healthy(),  # refused by the rate limiter (max_wait=0)
    "cached": Cacheable(max_age=600),  # cache hits
}


def policies(upstream: Upstream) -> dict[str, HostPolicy]:
    key = {name: upstream[name].host_key for name in ORIGINS}
    return {
        key["flaky"]: HostPolicy(breaker=None),
        key["down"]: HostPolicy(
            retry=None, breaker=CircuitBreakerPolicy(consecutive_failures=2, open_duration=600)
        ),
        key["budget"]: HostPolicy(
            retry=RetryPolicy(
                max_retries=2, backoff_base=0.001, budget_ratio=0, budget_min_per_second=0
            ),
            breaker=None,
        ),
        key["limited"]: HostPolicy(rate_limit=RateLimitPolicy(rate=50, burst=1)),
        key["strict"]: HostPolicy(rate_limit=RateLimitPolicy(rate=1, per=600, burst=1, max_wait=0)),
        key["cached"]: HostPolicy(cache=CachePolicy()),
    }


def outcome(call: Callable[[], httpx.Response]) -> int | str:
    """The status of ``call``'s response, or the name of the klayengo error it raised."""
    try:
        return call().status_code
    except (CircuitOpenError, RateLimitExceeded) as exc:
        return type(exc).__name__


def drive(client: ResilientClient, upstream: Upstream, phase: int) -> None:
    """One round of every kind of traffic (both phases make the same series move)."""
    down, strict = [], []
    for i in range(N):
        assert client.get(upstream["api"].url(f"/p{phase}/{i}")).status_code == 200
        assert client.get(upstream["flaky"].url(f"/p{phase}/{i}")).status_code == 200
        assert client.get(upstream["budget"].url("/")).status_code == 503
        assert client.get(upstream["limited"].url("/")).status_code == 200
        assert client.get(upstream["cached"].url("/item")).status_code == 200
        down.append(outcome(lambda: client.get(upstream["down"].url("/"))))
        strict.append(outcome(lambda: client.get(upstream["strict"].url("/"))))
    first = phase == 1
    assert down == [503, 503] * first + ["CircuitOpenError"] * (N - 2 * first)
    assert strict == [200] * first + ["RateLimitExceeded"] * (N - first)


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        pytest.skip(
            "prometheus not on PATH: install the Debian/Ubuntu package `prometheus` "
            "(`apt-get install -y prometheus`; .ci/run does)"
        )
    return found


@dataclass
class Observed:
    prometheus: Prometheus
    client: ResilientClient
    #: Origin name -> its host key (the ``host`` label).
    keys: dict[str, str]


@pytest.fixture(scope="module")
def observed(
    prometheus_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Observed]:
    """Prometheus scraping a client after two rounds of traffic, scraped twice since."""
    registry = CollectorRegistry()
    with Upstream(ORIGINS) as upstream:
        for phase in (1, 2):
            for i in range(N):
                upstream["flaky"].route(f"/p{phase}/{i}", FailTimes(1))
        with (
            klayengo.serve_metrics(0, registry=registry) as endpoint,
            ResilientClient(
                metrics=MetricsPolicy(registry=registry),
                name=CLIENT,
                timeout=HTTP_TIMEOUT,
                retry=RetryPolicy(backoff_base=0.001, backoff_max=0.005),
                hosts=policies(upstream),
            ) as client,
        ):
            prometheus = start_prometheus(
                prometheus_binary,
                tmp_path_factory.mktemp("prometheus"),
                f"127.0.0.1:{endpoint.port}",
            )
            try:
                # Every series exists before it moves: rate() needs two samples that differ.
                wait_for("the first scrape", prometheus.last_scrape, SCRAPE_TIMEOUT)
                drive(client, upstream, 1)
                prometheus.wait_for_scrapes(after=time.time(), count=1)
                drive(client, upstream, 2)
                prometheus.wait_for_scrapes(after=time.time(), count=2)
                yield Observed(prometheus, client, {n: upstream[n].host_key for n in ORIGINS})
            finally:
                stop(prometheus)


def finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(r["value"][1])) for r in result)


def panel_queries(host: str) -> list[tuple[str, list[str]]]:
    """(panel title, its queries) with the variables set as Grafana would."""
    board = json.loads(DASHBOARD.read_text())
    found = []
    for panel in board["panels"]:
        targets = panel.get("targets", [])
        if not targets:
            continue
        queries = [
            t["expr"]
            .replace("$__rate_interval", RATE_INTERVAL)
            .replace("$job", JOB)
            .replace("$client", CLIENT)
            .replace("$host", host)
            for t in targets
        ]
        found.append((panel["title"], queries))
    return found


#: For each host, the per-host panels the traffic gives data (one query at least).
PER_HOST = {
    "api": {"Requests by status", "Latency", "In flight", "Circuit breaker state"},
    "flaky": {"Requests by status", "Latency", "Retries by reason"},
    "down": {
        "Requests by status",
        "Errors by type",
        "Circuit breaker state",
        "Circuit breaker rejections and transitions",
    },
    "budget": {"Requests by status", "Retries by reason"},
    "limited": {"Requests by status", "Rate-limit waits", "Circuit breaker state"},
    "strict": {"Errors by type", "Rate-limit waits"},
    "cached": {"Requests by status", "Cache hit ratio", "Cache lookups by result"},
}


def test_every_dashboard_query_has_data_on_a_real_prometheus(observed: Observed) -> None:
    prometheus, keys = observed.prometheus, observed.keys
    targets = prometheus.api("targets")["activeTargets"]
    assert [(t["health"], t["lastError"]) for t in targets] == [("up", "")]

    # Every query, over every host (Grafana's "All").
    for title, queries in panel_queries(ALL):
        results = [prometheus.query(q) for q in queries]
        for query, result in zip(queries, results, strict=True):
            assert result, f"{title}: no data for {query}"
            assert finite(result), f"{title}: no number in {result} for {query}"

    # Host by host, the panels of its row that this host's traffic feeds.
    for name, expected in PER_HOST.items():
        panels = dict(panel_queries(keys[name]))
        for title in expected:
            results = [prometheus.query(q) for q in panels[title]]
            assert any(finite(r) for r in results), f"{title} has no data for {name}: {results}"

    # The breaker gauge: every breaker, closed ones included (flaky and budget have none).
    states = {
        r["metric"]["host"]: float(r["value"][1])
        for r in prometheus.query(f'klayengo_circuit_breaker_state{{client="{CLIENT}"}}')
    }
    assert states == {
        keys["api"]: 0,
        keys["down"]: 1,
        keys["limited"]: 0,
        keys["strict"]: 0,
        keys["cached"]: 0,
    }
    assert observed.client.breaker_state(keys["down"]) == "open"

    # The dashboard's variables find their values.
    hosts = prometheus.api(
        "label/host/values", **{"match[]": f'klayengo_requests_total{{job="{JOB}"}}'}
    )
    assert set(hosts) == set(keys.values())


def test_the_rules_evaluate_and_the_alerts_go_pending(observed: Observed) -> None:
    prometheus, keys = observed.prometheus, observed.keys
    groups = prometheus.api("rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == 13
    for rule in rules:
        assert rule["health"] != "err", rule

    def recorded(name: str, host: str) -> list[dict[str, Any]]:
        result = prometheus.query(f'{name}{{client="{CLIENT}", host="{keys[host]}"}}')
        return result if finite(result) else []

    for name, host in [
        ("job_client_host:klayengo_requests:rate5m", "api"),
        ("job_client_host:klayengo_request_errors:ratio_rate5m", "down"),
        ("job_client_host:klayengo_request_duration_seconds:p99_rate5m", "api"),
        ("job_client_host_reason:klayengo_retries:rate5m", "flaky"),
        ("job_client_host:klayengo_circuit_breaker_rejections:rate5m", "down"),
        ("job_client_host:klayengo_rate_limit_wait_seconds:mean_rate5m", "limited"),
        ("job_client_host:klayengo_cache_hits:ratio_rate5m", "cached"),
    ]:
        wait_for(f"{name} for {host}", lambda n=name, h=host: recorded(n, h), SCRAPE_TIMEOUT)
    ratio = recorded("job_client_host:klayengo_request_errors:ratio_rate5m", "api")
    assert [float(r["value"][1]) for r in ratio] == [0.0]

    def pending() -> set[tuple[str, str]]:
        return {
            (a["labels"]["alertname"], a["labels"]["host"])
            for a in prometheus.api("alerts")["alerts"]
            if a["state"] == "pending"
        }

    expected = {
        ("KlayengoCircuitBreakerOpen", keys["down"]),
        ("KlayengoRetryBudgetExhausted", keys["budget"]),
        ("KlayengoHighErrorRatio", keys["down"]),
        ("KlayengoHighErrorRatio", keys["budget"]),
        # Refused by the client's own rate limiter: failed logical requests too.
        ("KlayengoHighErrorRatio", keys["strict"]),
    }
    wait_for("the pending alerts", lambda: pending() >= expected, SCRAPE_TIMEOUT)
    assert pending() == expected


def test_prometheus_is_stopped_and_its_port_freed(prometheus_binary: str, tmp_path: Path) -> None:
    prometheus = start_prometheus(prometheus_binary, tmp_path, "127.0.0.1:9")
    port = int(prometheus.url.rsplit(":", 1)[1])
    stop(prometheus)
    assert prometheus.process.returncode is not None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert os.path.isdir(tmp_path / f"data-{port}")
