"""The cost of writing /metrics at the whole of OKX: the exposition of every family with per-subscription
series on (METRICS_PER_SUBSCRIPTION=true: two families × 27,000 subscriptions) plus 27 bars × 3 price kinds of
channel figures. Prints the median time of one exposition and its size; no database or Redis (the samples
are made here), so the figure is the writer's alone.

    .venv/bin/python bench/metrics_render.py [--subscriptions 27000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collectors.monitoring import metrics as m

BARS = ["1s", "1m", "3m", "5m", "15m", "30m", "1H", "2H", "4H", "6H", "12H", "1D", "2D", "3D", "5D", "1W", "1M",
        "3M", "6Hutc", "12Hutc", "1Dutc", "2Dutc", "3Dutc", "5Dutc", "1Wutc", "1Mutc", "3Mutc"]
PRICES = ["trade", "mark", "index"]


def samples(subscriptions: int) -> dict[m.Family, list[m.Sample]]:
    out: dict[m.Family, list[m.Sample]] = {family: [m.Sample(12345.0)] for family in m.COUNTERS}
    out[m.FLUSH_DURATION] = [m.Sample(81.25, suffix="_sum"), m.Sample(9000, suffix="_count")]
    for family in (m.CHANNELS,):
        out[family] = [m.Sample(1000, {"timeframe": bar, "state": state, "price": price})
                       for bar in BARS for price in PRICES for state in ("fresh", "quiet", "refused")]
    for family in (m.CHANNEL_MESSAGE_AGE_MAX, m.CHANNEL_LAG_MAX, m.CHANNELS_UNCONFIRMED):
        out[family] = [m.Sample(0.5, {"timeframe": bar, "price": price}) for bar in BARS for price in PRICES]
    per_subscription = [{"symbol": f"INST{i // 27}-USDT-SWAP", "timeframe": BARS[i % 27], "price": "trade"}
                        for i in range(subscriptions)]
    out[m.SUBSCRIPTION_MESSAGE_AGE] = [m.Sample(0.25 + i % 7, labels) for i, labels in enumerate(per_subscription)]
    out[m.SUBSCRIPTION_LAG] = [m.Sample(float(i % 3), labels) for i, labels in enumerate(per_subscription)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscriptions", type=int, default=27_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    data = samples(args.subscriptions)
    series = sum(len(v) for v in data.values())
    times = []
    for _ in range(args.rounds):
        started = time.perf_counter()
        text = m.render(data)
        times.append(time.perf_counter() - started)
    median_ms = statistics.median(times) * 1000
    print(f"exposition of {series:,} series ({len(text.encode()):,} bytes): median {median_ms:.1f} ms, "
          f"best {min(times) * 1000:.1f} ms over {args.rounds} rounds")


if __name__ == "__main__":
    main()
