"""The shipped observability files: the Prometheus rules pass ``promtool check rules``
and their unit tests (``promtool test rules``); the Grafana dashboard is importable
JSON whose queries name only klayengo's metrics and the dashboard's own variables.

``test_observability_prometheus.py`` runs the dashboard's queries and the rules on a
real Prometheus scraping a real client."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from klayengo._metrics import METRIC_NAMES

OBSERVABILITY = Path(__file__).resolve().parents[2] / "observability"
RULES = OBSERVABILITY / "prometheus" / "klayengo-rules.yml"
RULES_TEST = OBSERVABILITY / "prometheus" / "klayengo-rules.test.yml"
DASHBOARD = OBSERVABILITY / "grafana" / "klayengo-dashboard.json"
#: The variables the dashboard's queries may use: its own and Grafana's.
VARIABLES = {"job", "client", "host", "__rate_interval"}
#: What the issue asks the dashboard to show, per host (panel titles).
REQUIRED_PANELS = {
    "Requests by status",
    "Latency",
    "Circuit breaker state",
    "Retries by reason",
    "Rate-limit waits",
    "Cache hit ratio",
}
#: Series names a query may select: the families, and a histogram's parts.
SERIES = {
    *METRIC_NAMES,
    *(
        f"{name}{suffix}"
        for name in ("klayengo_request_duration_seconds", "klayengo_rate_limit_wait_seconds")
        for suffix in ("_bucket", "_sum", "_count")
    ),
}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip(
            "promtool not on PATH: install the Debian/Ubuntu package `prometheus` "
            "(`apt-get install -y prometheus`; .ci/run does) to check the rules"
        )
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=60, cwd=RULES.parent, check=False
    )


def test_rules_pass_promtool_check() -> None:
    result = run(promtool(), "check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 13 rules found" in result.stdout


def test_rules_pass_their_unit_tests() -> None:
    result = run(promtool(), "test", "rules", RULES_TEST.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rules_unit_tests_can_fail(tmp_path: Path) -> None:
    # The unit tests pin the thresholds: a rule file with another one fails them.
    changed = RULES.read_text().replace("ratio_rate5m > 0.05", "ratio_rate5m > 0.3")
    assert changed != RULES.read_text()
    (tmp_path / RULES.name).write_text(changed)
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    result = subprocess.run(
        [promtool(), "test", "rules", RULES_TEST.name],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode != 0
    assert "KlayengoHighErrorRatio" in result.stdout + result.stderr


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict[str, Any]]:
    return list(dashboard()["panels"])


def exprs() -> list[tuple[str, str]]:
    """(panel title, query) of every query in the dashboard."""
    return [(p["title"], t["expr"]) for p in panels() for t in p.get("targets", [])]


def test_dashboard_is_importable_as_is() -> None:
    board = dashboard()
    assert board["id"] is None and board["uid"] == "klayengo" and board["title"] == "klayengo"
    assert isinstance(board["schemaVersion"], int)
    # No __inputs to fill in: the data source is a variable, so the file imports through
    # the UI, the HTTP API or provisioning alike.
    assert "__inputs" not in board
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert set(variables) == {"datasource", "job", "client", "host"}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "client", "host"):
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*"
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"] == panel["datasource"]


def test_dashboard_has_a_row_per_host_with_the_panels_asked_for() -> None:
    rows = [p for p in panels() if p["type"] == "row"]
    per_host = [r for r in rows if r.get("repeat") == "host"]
    assert len(per_host) == 1
    start = panels().index(per_host[0])
    titles = {p["title"] for p in panels()[start + 1 :] if p["type"] != "row"}
    assert titles >= REQUIRED_PANELS
    timeline = [p for p in panels() if p["type"] == "state-timeline"]
    assert timeline, "the breaker state is shown as a timeline"
    for panel in timeline:
        mapping = panel["fieldConfig"]["defaults"]["mappings"][0]["options"]
        assert {k: v["text"] for k, v in mapping.items()} == {
            "0": "closed",
            "1": "open",
            "2": "half-open",
        }


def test_dashboard_queries_name_only_klayengo_metrics_and_known_variables() -> None:
    for title, expr in exprs():
        assert set(re.findall(r"\$(\w+)", expr)) <= VARIABLES, (title, expr)
        names = set(re.findall(r"\b(klayengo_\w+)", expr))
        assert names and names <= SERIES, (title, names - SERIES)
        # Every selector is narrowed by the dashboard's variables.
        for selector in re.findall(r"klayengo_\w+\{([^}]*)\}", expr):
            assert 'job=~"$job"' in selector and 'client=~"$client"' in selector, (title, expr)
        assert expr.count("(") == expr.count(")"), (title, expr)
