"""Benchmark subscription rules and the bulk subscribe at the mission's scale: 1,000 instruments × 27 bars.

    .venv/bin/python bench/rules.py [--instruments 1000] [--rounds 3]

Runs in its own database (the configured one's name + `_bench`, created and migrated here, shared with
bench/upsert.py) so it never touches real data; its own instruments (`Bnnnn-USDT-SWAP`) are removed first.
Each round times, through the same services the admin, the API and the CLI call:

* rule create: a rule "every bench SWAP × all bars" that yields N × 27 subscriptions;
* rule narrow / widen: the rule changed to {1m, 1H} (ends N × 25) and back (resumes them);
* rule no-op: materializing again with nothing to change (what every instrument sync costs);
* rule delete: ends all N × 27;
* POST /api/v1/subscribe of N symbols × 27 bars over Django's test client, with the API limits raised:
  first (all created), again (all unchanged), after pausing all (all reactivated); the service alone too.

Target (issue 14): creating or changing a rule of 27,000 subscriptions, and the 27,000-pair POST, ≤ 5 s each.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from upsert import _setup_django, _use_bench_database  # the benchmark database, as bench/upsert.py makes it

PREFIX = "B"
SUFFIX = "-USDT-SWAP"


def _reset(instruments: int) -> list[str]:
    from candles.models import Instrument, Subscription, SubscriptionRule, Timeframe

    ours = Instrument.objects.filter(inst_id__startswith=PREFIX, inst_id__endswith=SUFFIX)
    Subscription.objects.filter(instrument__in=ours).delete()
    SubscriptionRule.objects.filter(name__startswith="bench ").delete()
    ours.delete()
    Timeframe.objects.update(is_active=True)
    ids = [f"{PREFIX}{k:04d}{SUFFIX}" for k in range(instruments)]
    Instrument.objects.bulk_create([Instrument(inst_id=i, inst_type="SWAP", settle_ccy="USDT",
                                               inst_family=i.removesuffix("-SWAP")) for i in ids])
    return ids


def _timed(label: str, times: dict[str, list[float]], call: Callable[[], object]) -> object:
    start = time.perf_counter()
    result = call()
    times[label].append(time.perf_counter() - start)
    return result


def _rule_round(times: dict[str, list[float]], pairs: int) -> None:
    from candles.rules import rule_create, rule_delete, rule_update, rules_materialize

    outcome = _timed("rule create (all bars)", times, lambda: rule_create(
        name="bench swaps", inst_type="SWAP", inst_id_pattern=f"{PREFIX}*{SUFFIX}", all_bars=True))
    assert outcome.materialized.created == pairs, outcome.materialized
    rule = outcome.rule
    narrowed = _timed("rule narrow to {1m, 1H}", times,
                      lambda: rule_update(rule=rule, all_bars=False, bars=["1m", "1H"]))
    assert narrowed.materialized.ended == pairs - 2 * pairs // 27, narrowed.materialized
    widened = _timed("rule widen to all bars", times, lambda: rule_update(rule=rule, all_bars=True, bars=[]))
    assert widened.materialized.updated == pairs - 2 * pairs // 27, widened.materialized
    again = _timed("rule no-op materialize", times, rules_materialize)
    assert not again.changed, again
    deleted = _timed("rule delete", times, lambda: rule_delete(rule=rule))
    assert deleted.ended == pairs, deleted


def _api_round(times: dict[str, list[float]], ids: list[str], bars: list[str], token: str) -> None:
    from django.test import Client
    from django.test.utils import override_settings

    from candles.models import Subscription
    from candles.subscriptions import subscriptions_create

    Subscription.objects.filter(instrument__inst_id__in=ids).delete()
    client = Client(HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Token {token}")
    body = {"symbols": ids, "timeframes": bars}
    with override_settings(API_MAX_SYMBOLS=len(ids), API_MAX_TIMEFRAMES=len(bars), API_THROTTLE_USER=None):
        for label, expected, status in (("created", "created", 201), ("unchanged", "unchanged", 200)):
            response = _timed(f"POST /subscribe ({label})", times,
                              lambda: client.post("/api/v1/subscribe", body, content_type="application/json"))
            assert response.status_code == status, response.content[:500]
            assert response.json()[expected] == len(ids) * len(bars)
        Subscription.objects.filter(instrument__inst_id__in=ids).update(is_active=False)
        response = _timed("POST /subscribe (reactivated)", times,
                          lambda: client.post("/api/v1/subscribe", body, content_type="application/json"))
        assert response.json()["reactivated"] == len(ids) * len(bars)
    Subscription.objects.filter(instrument__inst_id__in=ids).delete()
    result = _timed("subscriptions_create alone (created)", times,
                    lambda: subscriptions_create(inst_ids=ids, bars=bars))
    assert len(result.created) == len(ids) * len(bars)
    Subscription.objects.filter(instrument__inst_id__in=ids).delete()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instruments", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    bench_db = _use_bench_database()
    _setup_django()
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from candles.models import Timeframe

    ids = _reset(args.instruments)
    bars = list(Timeframe.objects.values_list("code", flat=True))
    pairs = len(ids) * len(bars)
    user, _ = get_user_model().objects.get_or_create(username="bench-rules")
    token, _ = Token.objects.get_or_create(user=user)
    print(f"database {bench_db}: {len(ids)} instruments × {len(bars)} bars = {pairs} subscriptions, "
          f"{args.rounds} rounds")

    times: dict[str, list[float]] = defaultdict(list)
    for _ in range(args.rounds):
        _rule_round(times, pairs)
        _api_round(times, ids, bars, token.key)
    _reset(0)

    width = max(map(len, times))
    for label, values in times.items():
        print(f"  {label.ljust(width)}  median {statistics.median(values):6.2f} s   "
              f"(min {min(values):.2f}, max {max(values):.2f})")


if __name__ == "__main__":
    main()
