"""Instant queries against a Prometheus HTTP API (``/api/v1/query``).

Used by live drift checks when a DriftMonitor names a Prometheus: the PromQL is built by
the pure layer (``drift.window.prometheus_queries``); this returns plain (labels, value)
rows of the vector result.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

TIMEOUT = 10.0


class PrometheusError(Exception):
    """Prometheus did not answer, or refused the query; the message says which."""


def query(
    base_url: str, promql: str, timeout: float = TIMEOUT
) -> list[tuple[dict[str, str], float]]:
    """The instant vector ``promql`` evaluates to now."""
    url = f"{base_url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body: Any = json.loads(response.read().decode("utf-8", "replace"))
    except urllib.error.HTTPError as exc:
        # Only Prometheus's own error text is repeated (into status): not an arbitrary body.
        detail = exc.reason
        with contextlib.suppress(ValueError, OSError):
            parsed = json.loads(exc.read(4096).decode("utf-8", "replace"))
            if isinstance(parsed, dict) and parsed.get("error"):
                detail = str(parsed["error"])[:300]
        raise PrometheusError(f"{base_url} answered {exc.code}: {detail}") from exc
    except (OSError, ValueError) as exc:
        raise PrometheusError(f"{base_url}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error") if isinstance(body, dict) else "not a Prometheus answer"
        raise PrometheusError(f"{base_url} refused the query: {str(error)[:300]}")
    data = body.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "vector":
        got = data.get("resultType") if isinstance(data, dict) else type(data).__name__
        raise PrometheusError(f"{base_url}: expected a vector, got {got}")
    try:
        return [_row(item) for item in data.get("result") or []]
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise PrometheusError(f"{base_url}: a malformed vector sample ({exc!r})") from exc


def _row(item: Any) -> tuple[dict[str, str], float]:
    """One sample of a vector: ``{"metric": {labels}, "value": [time, "text"]}``."""
    labels = {str(k): str(v) for k, v in (item.get("metric") or {}).items()}
    return labels, float(item["value"][1])
