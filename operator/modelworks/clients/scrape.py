"""Read Prometheus text exposition from pods' /metrics endpoints.

Used for canary analysis (the serving pods' request counters and latency histograms)
and for live drift (their feature histograms). Returns plain samples; the pure layers
do the arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from modelworks.clients.http import HttpError, Limits, get

LIMITS = Limits(deadline=5.0, max_bytes=4 * 1024 * 1024)
ACCEPT = "text/plain;version=0.0.4"


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Scrape:
    """One pod's samples, or why there are none."""

    pod: str
    samples: tuple[Sample, ...]
    error: str | None = None


def parse(text: str, prefixes: Sequence[str] = ()) -> tuple[Sample, ...]:
    """The samples of a Prometheus text exposition (only names with one of ``prefixes``)."""
    out: list[Sample] = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if prefixes and not s.name.startswith(tuple(prefixes)):
                continue
            out.append(Sample(s.name, dict(s.labels), float(s.value)))
    return tuple(out)


def fetch(url: str, prefixes: Sequence[str] = (), limits: Limits = LIMITS) -> tuple[Sample, ...]:
    """One /metrics endpoint's samples, within ``limits`` (:class:`HttpError` otherwise)."""
    body = get(url, limits, ACCEPT).body
    return parse(body.decode("utf-8", "replace"), prefixes)


def pod_metrics_url(pod: Mapping[str, Any], port: int, path: str = "/metrics") -> str | None:
    ip = (pod.get("status") or {}).get("podIP")
    return f"http://{ip}:{port}{path}" if ip else None


def scrape_pods(
    pods: Iterable[Mapping[str, Any]],
    port: int,
    prefixes: Sequence[str] = (),
    limits: Limits = LIMITS,
) -> list[Scrape]:
    """Every pod's /metrics, fetched in parallel, each within ``limits``; a pod that does
    not answer (in time, or within the size limit) has ``error``."""
    targets = [(p["metadata"]["name"], pod_metrics_url(p, port)) for p in pods]

    def one(target: tuple[str, str | None]) -> Scrape:
        name, url = target
        if url is None:
            return Scrape(name, (), "no pod IP yet")
        try:
            return Scrape(name, fetch(url, prefixes, limits))
        except HttpError as exc:
            return Scrape(name, (), f"{exc.reason}: {exc.detail}")
        except ValueError as exc:
            return Scrape(name, (), f"{type(exc).__name__}: {exc}")

    if not targets:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(targets))) as pool:
        return list(pool.map(one, targets))
