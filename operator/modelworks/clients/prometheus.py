"""Instant queries against a Prometheus HTTP API (``/api/v1/query``).

Used by live drift checks when a DriftMonitor names a Prometheus: the PromQL is built by
the pure layer (``drift.window.prometheus_queries``); this returns plain (labels, value)
rows of the vector result.

The URL is a tenant's, so the GET is bounded (:mod:`modelworks.clients.http`: total
deadline, body size, redirects not followed) and :class:`PrometheusError`'s message is
coarse: the URL without credentials or query, plus an HTTP status code or one of
Prometheus's own ``errorType`` values. It never repeats a body or a socket error, so
status cannot be used to read other servers' answers or to tell a closed port from a
filtered one. The details go to the operator's debug log.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from typing import Any

from modelworks.clients.http import HttpError, Limits, get, redact

LIMITS = Limits(deadline=10.0, max_bytes=8 * 1024 * 1024)
ERROR_TYPES = frozenset(
    {"timeout", "canceled", "execution", "bad_data", "internal", "unavailable", "not_found"}
)

log = logging.getLogger(__name__)


class PrometheusError(Exception):
    """Prometheus did not answer, or refused the query; the message is safe for status."""


def query(
    base_url: str, promql: str, limits: Limits = LIMITS
) -> list[tuple[dict[str, str], float]]:
    """The instant vector ``promql`` evaluates to now."""
    url = f"{base_url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    where = f"Prometheus at {redact(base_url)}"
    try:
        response = get(url, limits, "application/json", any_status=True)
    except HttpError as exc:
        log.debug("%s: %s", where, exc.detail)
        raise PrometheusError(f"{where} {_coarse(exc, limits)}") from None
    code = f"HTTP {response.status}"
    try:
        body: Any = json.loads(response.body)
    except ValueError as exc:
        log.debug("%s: %s, not JSON: %s", where, code, exc)
        raise PrometheusError(f"{where} did not answer a valid query response ({code})") from None
    return _rows(where, code, body)


def _coarse(exc: HttpError, limits: Limits) -> str:
    if exc.reason == "redirect":
        return f"answered a redirect (HTTP {exc.status}), which is not followed"
    if exc.reason == "too-large":
        return f"answered more than {limits.max_bytes} bytes"
    if exc.reason == "invalid-url":
        return "is not an http(s) URL"
    return f"could not be reached, or did not answer within {limits.deadline:g}s"


def _rows(where: str, code: str, body: Any) -> list[tuple[dict[str, str], float]]:
    invalid = PrometheusError(f"{where} did not answer a valid query response ({code})")
    if not isinstance(body, dict) or body.get("status") not in ("success", "error"):
        raise invalid
    if body["status"] == "error":
        kind = body.get("errorType")
        log.debug("%s refused the query (%s): %.300s", where, code, body.get("error"))
        named = f"{kind}, " if kind in ERROR_TYPES else ""
        raise PrometheusError(f"{where} refused the query ({named}{code})")
    data = body.get("data")
    if not code.startswith("HTTP 2") or not isinstance(data, dict):
        raise invalid
    if data.get("resultType") != "vector":
        raise PrometheusError(f"{where} did not answer an instant vector")
    rows: list[tuple[dict[str, str], float]] = []
    try:
        for item in data.get("result") or []:
            labels = {str(k): str(v) for k, v in (item.get("metric") or {}).items()}
            rows.append((labels, float(item["value"][1])))
    except (AttributeError, KeyError, IndexError, TypeError, ValueError):
        raise invalid from None
    return rows
