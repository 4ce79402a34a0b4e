"""The exposition (prometheus_client's writer, fed by the catalogue) and the metric catalogue, read back with a
strict parser and with prometheus_client's."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from collectors.monitoring import metrics as m
from tests.collectors.api.exposition import FormatError, parse

LABELLED = m.Family("okx_candles_test_things", "gauge", "Things.\nSecond line with a \\ backslash.", ("symbol", "bar"))
PLAIN = m.Family("okx_candles_test_events_total", "counter", "Events.")
SUMMARY = m.Family("okx_candles_test_duration_seconds", "summary", "Durations.")


def test_label_values_are_escaped_and_read_back_exactly():
    nasty = 'a "quoted" \\ back\nslash'
    samples = [m.Sample(1, {"symbol": nasty, "bar": "1m"}), m.Sample(2, {"symbol": "B", "bar": "1M"})]
    text = m.render({LABELLED: samples}, families=[LABELLED])

    assert 'symbol="a \\"quoted\\" \\\\ back\\nslash"' in text
    family = parse(text)["okx_candles_test_things"]
    assert family.help == "Things.\nSecond line with a \\ backslash."
    assert family.value(symbol=nasty, bar="1m") == 1
    assert family.value(symbol="B", bar="1M") == 2  # bars stay case-sensitive


def test_values_are_written_in_the_formats_prometheus_reads():
    values = [0, 7, 2**53 + 1, 0.25, 1e-9, 12.0, 1.5e300, math.inf, -math.inf, math.nan]
    text = m.render({PLAIN: [m.Sample(v, {}) for v in values[:1]],
                     LABELLED: [m.Sample(v, {"symbol": str(i), "bar": "1m"}) for i, v in enumerate(values)]},
                    families=[PLAIN, LABELLED])

    lines = [line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith("okx_candles_test_things")]
    # Go's float format, as every Prometheus client writes it: Prometheus keeps float64, so 2**53 + 1 arrives as
    # 2**53 whatever the text says.
    assert lines == ["0.0", "7.0", "9.007199254740992e+15", "0.25", "1e-09", "12.0", "1.5e+300", "+Inf", "-Inf",
                     "NaN"]
    read = parse(text)["okx_candles_test_things"].by_label("symbol")
    assert [read[str(i)] for i in range(9)] == [float(v) for v in values[:9]]
    assert math.isnan(read["9"])


def test_a_summary_has_its_sum_and_count_and_families_without_samples_keep_their_header():
    text = m.render({SUMMARY: [m.Sample(1.5, suffix="_sum"), m.Sample(3, suffix="_count")]},
                    families=[SUMMARY, PLAIN])

    assert text == (
        "# HELP okx_candles_test_duration_seconds Durations.\n"
        "# TYPE okx_candles_test_duration_seconds summary\n"
        "okx_candles_test_duration_seconds_sum 1.5\n"
        "okx_candles_test_duration_seconds_count 3.0\n"
        "# HELP okx_candles_test_events_total Events.\n"
        "# TYPE okx_candles_test_events_total counter\n"
    )
    families = parse(text)
    assert families["okx_candles_test_duration_seconds"].value("_count") == 3
    assert families["okx_candles_test_events_total"].samples == {}


def test_a_label_the_family_does_not_declare_is_refused():
    with pytest.raises(ValueError, match="not declared"):
        m.render({PLAIN: [m.Sample(1, {"symbol": "x"})]}, families=[PLAIN])


def test_the_parser_used_here_is_strict():
    good = "# HELP okx_a_total A.\n# TYPE okx_a_total counter\nokx_a_total 1\n"
    assert parse(good)["okx_a_total"].value() == 1
    for broken in (
        good.rstrip("\n"),  # no final newline
        good.replace("okx_a_total 1", "okx_b_total 1"),  # a sample outside its family
        good.replace(" 1\n", " one\n"),
        good.replace("okx_a_total 1", 'okx_a_total{x="1",x="2"} 1'),
        good.replace("okx_a_total 1", 'okx_a_total{x="a"b"} 1'),
        good + "okx_a_total 2\n",  # the same series twice
        good.replace(" 1\n", " -1\n"),  # a negative counter
        "# TYPE okx_a_total counter\nokx_a_total 1\n",  # no HELP
    ):
        with pytest.raises(FormatError):
            parse(broken)


def test_the_catalogue_follows_prometheus_naming():
    names = m.METRIC_NAMES
    assert len(names) == len(set(names)) == len(m.FAMILIES)
    for family in m.FAMILIES:
        assert re.fullmatch(r"okx_candles_[a-z0-9_]+", family.name), family.name
        assert family.type in {"counter", "gauge", "summary"}
        assert family.name.endswith("_total") == (family.type == "counter"), family.name
        assert family.help.endswith("."), family.name
        assert not re.search(r"_(ms|milliseconds|minutes)\b", family.name)
    assert m.FLUSH_DURATION.name.endswith("_seconds")
    # Every counter reads a field of Keys.counters, and no two read the same one.
    fields = [family.counter_field for family in m.COUNTERS]
    assert all(fields)
    assert len(fields) == len(set(fields))


def test_a_full_exposition_is_read_by_prometheus_client_as_written():
    parser = pytest.importorskip("prometheus_client.parser")
    samples = {family: [m.Sample(3, dict.fromkeys(family.labels, 'x"y'))] for family in m.FAMILIES
               if family.type != "summary"}
    samples[m.FLUSH_DURATION] = [m.Sample(0.5, suffix="_sum"), m.Sample(2, suffix="_count")]
    text = m.render(samples)

    families = {f.name: f for f in parser.text_string_to_metric_families(text)}

    # prometheus_client names counter families without _total; its samples keep it.
    assert {f.name + ("_total" if f.type == "counter" else "") for f in families.values()} == set(m.METRIC_NAMES)
    assert families["okx_candles_flush_duration_seconds"].type == "summary"
    lag = families["okx_candles_subscription_lag_seconds"].samples[0]
    assert (lag.labels, lag.value) == ({"symbol": 'x"y', "timeframe": 'x"y', "price": 'x"y'}, 3.0)


def test_the_documentation_describes_every_metric():
    docs = (Path(__file__).resolve().parents[3] / "docs" / "status-and-metrics.md").read_text()
    table = re.findall(r"^\| `(okx_candles_[a-z0-9_]+)` \|", docs, flags=re.MULTILINE)

    assert table == list(m.METRIC_NAMES)
