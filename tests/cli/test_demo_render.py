"""The demo's rich tables, rendered on a fixed-width console and read back as text."""

from __future__ import annotations

import io
from typing import Any

import pytest

from klayengo._demo.live import LiveDisplay, load_rich
from klayengo._demo.options import DemoOptions
from klayengo._demo.scenario import Origin, scenario
from klayengo._demo.stats import DemoSummary, HostStats, Recorder
from klayengo._demo.tables import intro_head

WIDTH = 80  # a default terminal


@pytest.fixture
def rich() -> Any:
    pytest.importorskip("rich")
    return load_rich()


def console(rich: Any) -> Any:
    return rich.console.Console(record=True, width=WIDTH, file=io.StringIO(), color_system=None)


def busy_stats(origins: list[Origin]) -> dict[str, HostStats]:
    """Counts as large as a long run's: 3-digit requests, a 13-character cache cell."""
    hosts = {}
    for index, origin in enumerate(origins):
        stats = HostStats(name=origin.name, host=f"127.0.0.1:{40000 + index}")
        stats.requests = 712
        stats.statuses.update({"200": 650, "503": 62})
        stats.retries["status"] = 123
        stats.rejections, stats.delayed, stats.rate_limited = 45, 67, 8
        stats.cache.update({"hit": 512, "revalidated": 40, "stale": 155, "miss": 33})
        hosts[stats.host] = stats
    return hosts


def started(origins: list[Origin]) -> list[Origin]:
    """``origins`` with their timelines started at 0, as if the first request came then."""
    for origin in origins:
        if origin.phases is not None:
            origin.phases._start = 0.0
    return origins


def lines_of(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


def test_the_live_table_labels_the_phase_and_fits_80_columns(rich: Any) -> None:
    origins = started(scenario(20.0, seed=1))
    recorder = Recorder(busy_stats(origins), started=0.0)
    out = console(rich)
    display = LiveDisplay(rich, out)
    states = ["closed", "closed", "half_open", "closed", "open"]
    # 12 s into 20: flaky has recovered (from 11 s), cacheable is down (9 to 14 s).
    out.print(display.render(origins, recorder, states, 12.0, 0.0, 20.0))
    lines = lines_of(out.export_text())
    header = next(line for line in lines if line.startswith("origin"))
    assert header.split()[:3] == ["origin", "phase", "breaker"]
    names = {origin.name for origin in origins}
    rows = {
        line.split()[0]: line.split()
        for line in lines
        if line.split()[:1] and line.split()[0] in names
    }
    assert [row[1:3] for row in rows.values()] == [
        ["up", "closed"],
        ["slow", "closed"],
        ["recovered", "half_open"],
        ["5/s", "closed"],
        ["down", "open"],
    ]
    assert rows["cacheable"][-1] == "512/40/155/33"
    # No phase word on a line of its own, nothing cut short, nothing past 80 columns.
    assert not [line for line in lines if line.strip() in {"up", "slow", "down", "recovered"}]
    assert "…" not in "\n".join(lines)
    assert max(map(len, lines)) <= WIDTH


def test_the_phase_and_breaker_columns_keep_their_width(rich: Any) -> None:
    origins = started(scenario(20.0, seed=1))
    recorder = Recorder(busy_stats(origins), started=0.0)
    headers = []
    # At 0 s the words are short ("30% 503s", "closed"); at 12 s "recovered", "half_open".
    for now, states in ((0.0, ["closed"] * 5), (12.0, ["closed", "closed", "half_open"] * 2)):
        out = console(rich)
        out.print(LiveDisplay(rich, out).render(origins, recorder, states[:5], now, 0.0, 20.0))
        headers.append(next(line for line in lines_of(out.export_text()) if "breaker" in line))
    assert headers[0] == headers[1]


def test_the_intro_is_left_aligned_and_wraps_within_80_columns(rich: Any) -> None:
    origins = scenario(20.0, seed=1)
    out = console(rich)
    rows = [
        [o.name, str(40000 + n), o.upstream_text, o.policy_text()] for n, o in enumerate(origins)
    ]
    LiveDisplay(rich, out).intro(
        intro_head(DemoOptions(), len(origins), 7), rows, "http://127.0.0.1:9/metrics"
    )
    lines = lines_of(out.export_text())
    header = next(line for line in lines if line.startswith("origin"))
    behaviour = header.index("upstream behaviour")
    policy = header.index("client policy")
    # Each text starts where its header does (left-aligned), right after the port column.
    assert behaviour == len("cacheable 40000 ")
    healthy = next(line for line in lines if line.startswith("healthy"))
    assert healthy.index("always 200") == behaviour
    assert healthy.index("client defaults:") == policy
    assert "…" not in "\n".join(lines)
    assert max(map(len, lines)) <= WIDTH
    # Every word of every text is shown (wrapped, not truncated).
    words = " ".join(line[behaviour:policy] for line in lines[lines.index(header) + 2 :])
    for origin in origins:
        assert all(word in words.split() for word in origin.upstream_text.split())


def test_the_summary_right_aligns_its_numbers(rich: Any) -> None:
    origins = scenario(20.0, seed=1)
    out = console(rich)
    summary = DemoSummary(
        hosts=busy_stats(origins), elapsed=20.0, seed=1, metrics_url="http://127.0.0.1:9/m"
    )
    LiveDisplay(rich, out).summary(summary)
    lines = lines_of(out.export_text())
    header = next(line for line in lines if line.startswith("origin"))
    total = next(line for line in lines if line.startswith("total"))
    assert header.split()[:3] == ["origin", "opened", "reqs"]
    # "opened" and the counts end where their headers end.
    assert total.index("0 ") + 1 == header.index("opened") + len("opened")
    assert total.endswith("2560/200/775/165")
    assert max(map(len, lines)) <= WIDTH
