"""/metrics for releases (issue 13): what each shadow compared on this replica, per model and version.

Read at scrape time from the shadow's own counters (no I/O); Prometheus sums the replicas, as it
does every other counter. The pooled, fleet-wide figures are GET /admin/models/{name}/shadow's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from modelreg.serving.shadow import Tally


class ShadowMetrics(Collector):
    """modelreg_shadow_{compared,agreed,dropped,failed}_total and modelreg_shadow_max_abs_diff."""

    def __init__(self, figures: Callable[[], Mapping[tuple[str, int], Tally]]) -> None:
        self._figures = figures

    def collect(self) -> Iterator[Any]:
        figures = self._figures()
        labels = ["model", "version"]
        families = {
            "compared": CounterMetricFamily("modelreg_shadow_compared", "Shadow runs compared with production",
                                            labels=labels),
            "agreed": CounterMetricFamily("modelreg_shadow_agreed", "Shadow runs that agreed with production "
                                          "(within tolerance, or the same argmax for a classifier)", labels=labels),
            "dropped": CounterMetricFamily("modelreg_shadow_dropped",
                                           "Sampled requests dropped because the shadow queue was full", labels=labels),
            "failed": CounterMetricFamily("modelreg_shadow_failed", "Shadow runs where the shadow version raised",
                                          labels=labels),
        }
        largest = GaugeMetricFamily("modelreg_shadow_max_abs_diff",
                                    "Largest absolute output difference shadow vs production", labels=labels)
        for (model, version), tally in sorted(figures.items()):
            for name, family in families.items():
                family.add_metric([model, str(version)], getattr(tally, name))
            largest.add_metric([model, str(version)], tally.max_abs_diff)
        yield from families.values()
        yield largest
