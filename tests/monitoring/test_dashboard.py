"""The Grafana dashboard and the Prometheus configuration agree with what the code really exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from django.urls import reverse

from collectors.monitoring import metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "monitoring/grafana/dashboards/okx-candles.json"
PROMETHEUS = ROOT / "monitoring/prometheus.yml"

# A summary is exported as <name>_sum and <name>_count; every other family under its own name.
EXPORTED_SERIES = {
    series
    for family in metrics.FAMILIES
    for series in ((family.name + "_sum", family.name + "_count") if family.type == "summary" else (family.name,))
}


def dashboard_exprs() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


def test_every_series_a_panel_queries_is_exported():
    used = {name for _, expr in dashboard_exprs() for name in re.findall(r"\bokx_candles_[a-z0-9_]+", expr)}
    assert used, "the dashboard queries no okx_candles_ series"
    assert used - EXPORTED_SERIES == set()


def test_counters_are_read_through_rate_or_increase():
    counters = {f.name for f in metrics.FAMILIES if f.type == "counter"}
    for title, expr in dashboard_exprs():
        for name in set(re.findall(r"\bokx_candles_[a-z0-9_]+", expr)) & counters:
            assert re.search(rf"(rate|increase)\({name}\[", expr), f"{title!r} reads counter {name} raw"


@pytest.mark.parametrize("needed", [
    "messages_received_total", "flush_duration_seconds_sum", "buffer_entries", "channel_lag_max_seconds",
    "ws_reconnects_total", "gaps", "dead_letters_total", "rest_requests_total", "rest_rate_limited_total",
])
def test_the_panels_an_operator_watches_are_there(needed):
    assert any(re.search(rf"\bokx_candles_{needed}\b", expr) for _, expr in dashboard_exprs())


def test_panels_have_unique_ids_and_use_the_provisioned_data_source():
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    provisioned = (ROOT / "monitoring/grafana/provisioning/datasources/prometheus.yml").read_text()
    uid = re.search(r"uid:\s*(\S+)", provisioned).group(1)
    assert {panel["datasource"]["uid"] for panel in dashboard["panels"]} == {uid}


def test_prometheus_scrapes_the_metrics_route():
    path = re.search(r"metrics_path:\s*(\S+)", PROMETHEUS.read_text()).group(1)
    assert path == reverse("metrics")


def test_compose_monitoring_services_mount_these_files():
    import yaml

    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
    assert any("prometheus.yml" in v for v in services["prometheus"]["volumes"])
    assert any("dashboards" in v for v in services["grafana"]["volumes"])
