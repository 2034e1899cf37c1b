"""``GET /metrics``: the server's operational statistics and the live embedding health in the
Prometheus text format, written by ``prometheus_client``.

The values are read from :class:`~vecdoctor.serve.guard.Stats` and
:class:`~vecdoctor.monitor.live.LiveHealth` when Prometheus scrapes, so requests pay nothing for
them. Labels are closed sets (the server's own routes, status codes, alarm names): no document
text, query, model path or file path ever appears.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

ROUTES = ("/search", "/v1/embeddings", "/health", "/stats", "/monitor", "/metrics", "/admin/reload")
METHODS = ("GET", "POST")
ALARMS = ("anisotropy", "out_of_distribution", "no_lexical_match", "truncation")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HealthCollector:
    """A ``prometheus_client`` collector over the server's statistics and live health."""

    def __init__(self, stats: Any, health: Any, index: Any) -> None:
        self.stats, self.health, self.index = stats, health, index

    def collect(self) -> Iterator[Any]:
        yield from self._operational()
        yield from self._health()

    def _operational(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snap = self.stats.snapshot()
        requests = CounterMetricFamily("vecdoctor_requests", "Requests answered, by route",
                                       labels=["method", "route"])
        other = 0
        for key, count in snap["requests"].items():
            method, _, route = key.partition(" ")
            if route in ROUTES and method in METHODS:
                requests.add_metric([method, route], count)
            else:
                other += count
        requests.add_metric(["other", "other"], other)
        yield requests
        yield CounterMetricFamily("vecdoctor_requests_refused",
                                  "Requests refused for a missing or wrong API key",
                                  value=snap.get("refused_unauthorised", 0))
        codes = CounterMetricFamily("vecdoctor_responses", "Responses, by HTTP status code",
                                    labels=["code"])
        for code, count in snap["status_codes"].items():
            if code.isdigit() and len(code) == 3:
                codes.add_metric([code], count)
        yield codes
        latency = GaugeMetricFamily(
            "vecdoctor_request_latency_milliseconds",
            "Latency of the recent requests of a route, by quantile",
            labels=["method", "route", "quantile"],
        )
        for key, values in snap["latency"].items():
            method, _, route = key.partition(" ")
            if route in ROUTES and method in METHODS:
                for q in ("50", "95", "99"):
                    latency.add_metric([method, route, f"0.{q}"], values[f"p{q}_ms"])
        yield latency
        yield GaugeMetricFamily("vecdoctor_uptime_seconds", "Seconds since the server started",
                                value=snap["uptime_s"])
        yield GaugeMetricFamily("vecdoctor_index_documents", "Documents in the served index",
                                value=len(self.index))

    def _health(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snap = self.health.snapshot()
        yield CounterMetricFamily("vecdoctor_queries_observed",
                                  "Queries whose embedding health was recorded",
                                  value=snap["observed"])
        yield CounterMetricFamily("vecdoctor_health_windows", "Windows of queries judged",
                                  value=snap["windows"])
        traffic = snap["traffic"]
        gauges = {
            "queries": ("vecdoctor_window_queries", "Queries in the rolling window"),
            "mean_cosine": ("vecdoctor_query_mean_cosine",
                            "Mean pairwise cosine of the window's query vectors (alarm > 0.6)"),
            "isotropy": ("vecdoctor_query_isotropy", "Isotropy of the window's query vectors"),
            "ood_share": ("vecdoctor_query_ood_share",
                          "Share of the window's queries out of domain: below the baseline's 10th percentile "
                          "best score"),
            "ood_alarm_share": ("vecdoctor_query_ood_alarm_share",
                                "Out-of-domain share at which the window raises the alarm (more "
                                "than chance allows for the corpus' own queries)"),
            "best_score_p50": ("vecdoctor_query_best_score_median",
                               "Median best dense score of the window's queries"),
            "no_bm25_match_share": ("vecdoctor_query_no_bm25_match_share",
                                    "Share of the window's queries without a BM25 match"),
            "bm25_dense_agreement": ("vecdoctor_bm25_dense_agreement",
                                     "Mean overlap of the BM25 and dense top-10"),
            "query_truncation_share": ("vecdoctor_query_truncation_share",
                                       "Share of the window's queries longer than the model reads"),
            "embeddings_truncation_share": ("vecdoctor_embeddings_truncation_share",
                                            "Share of recent /v1/embeddings inputs truncated"),
        }
        for key, (name, doc) in gauges.items():
            if traffic.get(key) is not None:
                yield GaugeMetricFamily(name, doc, value=float(traffic[key]))
        base = snap["baseline"]
        if base is not None:
            yield GaugeMetricFamily("vecdoctor_baseline_ood_threshold",
                                    "Best dense score 90% of the corpus' own sentences reach (below: out of domain)",
                                    value=float(base["ood_threshold"]))
            yield GaugeMetricFamily("vecdoctor_baseline_query_mean_cosine",
                                    "Mean pairwise cosine of the baseline's queries",
                                    value=float(base["query_mean_cosine"]))
            yield GaugeMetricFamily("vecdoctor_documents_since_baseline",
                                    "Documents added (or removed, negative) since the baseline",
                                    value=float(snap["documents_since_baseline"]))
        firing = {a["name"] for a in snap["alarms"]}
        alarm = GaugeMetricFamily("vecdoctor_health_alarm",
                                  "1 while the rolling window raises the alarm", labels=["alarm"])
        windows = CounterMetricFamily("vecdoctor_health_alarm_windows",
                                      "Windows that ended with the alarm raised", labels=["alarm"])
        for name in ALARMS:
            alarm.add_metric([name], 1.0 if name in firing else 0.0)
            windows.add_metric([name], snap["windows_alarmed"].get(name, 0))
        yield alarm
        yield windows


def render(stats: Any, health: Any, index: Any) -> bytes:
    """The exposition text of one scrape (a registry of our own, not the process-global one)."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(HealthCollector(stats, health, index))
    return bytes(generate_latest(registry))
