"""Label sanitizing and bounding (DESIGN §3 Metrics): unit tests and properties."""

from __future__ import annotations

import string

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from klayengo import CircuitOpenError, MetricsPolicy, RateLimitExceeded, ResilientClient
from klayengo._core import hosts as hosts_module
from klayengo._core.hosts import HOST_MEMO_SIZE, host_key
from klayengo._core.labels import (
    ERROR_STATUS,
    LABEL_SAFE_CHARS,
    MAX_LABEL_LENGTH,
    OTHER_HOST,
    OTHER_METHOD,
    HostLabels,
    cache_result_label,
    client_label,
    error_type,
    method_label,
    retry_reason_label,
    safe_label,
    status_label,
    to_state_label,
)
from klayengo._metrics import ClientMetrics

req = httpx.Request("GET", "http://h/")


@pytest.mark.parametrize(
    ("method", "label"),
    [
        ("GET", "GET"),
        ("PATCH", "PATCH"),
        ("CONNECT", "CONNECT"),
        ("get", OTHER_METHOD),
        ("PURGE", OTHER_METHOD),
        ("GET\r\nX: y", OTHER_METHOD),
        ("", OTHER_METHOD),
    ],
)
def test_method_label(method: str, label: str) -> None:
    assert method_label(method) == label


@pytest.mark.parametrize(
    ("code", "label"),
    [
        (200, "200"),
        (100, "100"),
        (599, "599"),
        (999, "999"),
        (99, ERROR_STATUS),
        (1000, ERROR_STATUS),
        (-1, ERROR_STATUS),
    ],
)
def test_status_label(code: int, label: str) -> None:
    assert status_label(code) == label


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (httpx.ConnectError("x", request=req), "connect"),
        (httpx.ConnectTimeout("x", request=req), "connect"),
        (httpx.PoolTimeout("x", request=req), "connect"),
        (httpx.ProxyError("x", request=req), "connect"),
        (httpx.ReadTimeout("x", request=req), "timeout"),
        (httpx.WriteTimeout("x", request=req), "timeout"),
        (httpx.ReadError("x", request=req), "network"),
        (httpx.WriteError("x", request=req), "network"),
        (httpx.CloseError("x", request=req), "network"),
        (httpx.RemoteProtocolError("x", request=req), "protocol"),
        (httpx.LocalProtocolError("x", request=req), "protocol"),
        (CircuitOpenError("open", request=req, host="h", retry_after=1.0), "circuit_open"),
        (RateLimitExceeded("limited", request=req, host="h", retry_after=1.0), "rate_limited"),
        (httpx.UnsupportedProtocol("x", request=req), "other"),
        (ValueError("boom"), "other"),
        (KeyboardInterrupt(), "other"),
    ],
)
def test_error_type(exc: BaseException, kind: str) -> None:
    assert error_type(exc) == kind


def test_closed_sets_fold_unknown_values() -> None:
    for reason in ("status", "connect", "timeout", "network"):
        assert retry_reason_label(reason) == reason
    for result in ("hit", "miss", "stale", "revalidated", "bypass"):
        assert cache_result_label(result) == result
    for state in ("closed", "open", "half_open"):
        assert to_state_label(state) == state
    assert retry_reason_label("a\nb") == "other"
    assert cache_result_label('x"y') == "other"
    assert to_state_label("HALF-OPEN") == "other"


def test_client_label_is_safe() -> None:
    assert client_label("payments") == "payments"
    assert client_label('evil"}\nname') == "evil___name"
    assert len(client_label("x" * 1000)) == MAX_LABEL_LENGTH


def _is_safe(value: str) -> bool:
    return 0 < len(value) <= MAX_LABEL_LENGTH and set(value) <= LABEL_SAFE_CHARS


SECRET = "s3cr3tt0k3n"
hostish = st.text(
    alphabet=st.sampled_from(string.ascii_letters + string.digits + ".-_\"'\r\n\t <>{}\\%é☃ß中"),
    min_size=1,
    max_size=300,
)


@st.composite
def hostile_urls(draw: st.DrawFn) -> str:
    """URL strings with credentials, tokens, odd hosts; not all of them parse."""
    scheme = draw(st.sampled_from(["http", "https", "HTTP", "ws"]))
    user = draw(st.sampled_from(["", f"user:{SECRET}@", f"{SECRET}@", f"a%40b:{SECRET}@"]))
    host = draw(
        st.one_of(
            hostish,
            st.sampled_from(
                [
                    "[::1]",
                    "[2001:db8::1]",
                    "[fe80::1%25eth0]",
                    "bücher.example",
                    "xn--bcher-kva.example",
                    "EXAMPLE.COM",
                    "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 60,
                    "127.0.0.1",
                    'ex"ample.com',
                    "ex\r\nample.com",
                    "例え.テスト",
                ]
            ),
        )
    )
    port = draw(st.sampled_from(["", ":80", ":443", ":8080", ":65535"]))
    path = draw(st.sampled_from(["", "/", f"/p/{SECRET}", "/a b"]))
    query = draw(st.sampled_from(["", f"?token={SECRET}", f"?a=1&key={SECRET}"]))
    fragment = draw(st.sampled_from(["", f"#{SECRET}", "#frag"]))
    return f"{scheme}://{user}{host}{port}{path}{query}{fragment}"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_urls())
def test_host_labels_of_hostile_urls_are_safe(raw: str) -> None:
    try:
        url = httpx.URL(raw)
    except (httpx.InvalidURL, UnicodeError, ValueError):
        return  # httpx refuses it: no request, no label
    if not url.host:
        return
    store = ClientMetrics("c", max_hosts=10)
    label = store.host_of(url)
    assert _is_safe(label), label
    assert SECRET not in label
    assert "@" not in label and "/" not in label and "?" not in label and "#" not in label
    assert label == safe_label(host_key(url).lower())


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=500))
def test_event_host_arguments_are_sanitized(host: str) -> None:
    # Layers pass host keys, but the sink re-checks whatever it gets.
    labels = HostLabels(5)
    value = labels.label(host)
    assert _is_safe(value)
    store = ClientMetrics("c", max_hosts=5)
    store.retry(host, "status", 1, 0.1)
    store.breaker_transition(host, "closed", "open")
    for h, reason in store.snapshot()["retries"]:
        assert _is_safe(h) and _is_safe(reason)


def test_host_cap_100k_hosts_give_at_most_max_hosts_plus_one_values() -> None:
    max_hosts = 50
    store = ClientMetrics("c", max_hosts=max_hosts)
    seen = set()
    for i in range(100_000):
        url = httpx.URL(f"http://host-{i}.example:{1024 + i % 5000}/x?token={i}")
        seen.add(store.host_of(url))
        if i % 10 == 0:
            store.retry(host_key(url), "status", 1, 0.0)
            store.breaker_transition(host_key(url), "closed", "open")
    assert len(seen) == max_hosts + 1
    assert OTHER_HOST in seen
    snap = store.snapshot()
    hosts = {h for h, _ in snap["retries"]} | {h for h, _ in snap["transitions"]}
    assert len(hosts) <= max_hosts + 1
    assert len(store.hosts) == max_hosts
    # The host-key memo is bounded too.
    assert len(hosts_module._memo) <= HOST_MEMO_SIZE


def test_host_cap_through_a_client() -> None:
    registry = CollectorRegistry()
    transport = httpx.MockTransport(lambda request: httpx.Response(204))
    with ResilientClient(
        transport=transport, metrics=MetricsPolicy(registry=registry, max_hosts=3), name="cap"
    ) as client:
        for i in range(40):
            client.get(f"http://h{i}.example/")
    values = {
        s.labels["host"]
        for metric in registry.collect()
        for s in metric.samples
        if "host" in s.labels
    }
    assert values == {"h0.example", "h1.example", "h2.example", OTHER_HOST}
    assert (
        registry.get_sample_value(
            "klayengo_requests_total",
            {"client": "cap", "host": OTHER_HOST, "method": "GET", "status_code": "204"},
        )
        == 37
    )
