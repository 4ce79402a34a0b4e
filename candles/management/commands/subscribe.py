"""Subscribe instruments × timeframes from the command line (what `make demo` uses)."""

from __future__ import annotations

from datetime import datetime

from django.core.management.base import BaseCommand, CommandError

from candles.price_series import PriceSeriesError
from candles.subscriptions import UnknownNames, subscriptions_create
from okxproject.cli import add_price_argument


class Command(BaseCommand):
    help = ("Subscribe instruments to timeframes, e.g. `subscribe BTC-USDT ETH-USDT -t 1s -t 1m`, or their mark-price "
            "or index series (`subscribe BTC-USDT-SWAP -t 1m --price mark`). Idempotent.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("inst_ids", nargs="+", metavar="INST_ID")
        parser.add_argument("-t", "--timeframe", action="append", required=True, dest="bars",
                            help="OKX bar code, case-sensitive (1m is a minute, 1M a month); repeatable")
        parser.add_argument("--backfill-from", type=datetime.fromisoformat, default=None,
                            help="fetch history from this ISO 8601 time on (e.g. 2026-11-01T00:00:00+00:00)")
        add_price_argument(parser, note="mark and index have no 1s")

    def handle(self, *args, inst_ids: list[str], bars: list[str], backfill_from, price: str, **options) -> None:
        if backfill_from is not None and backfill_from.tzinfo is None:
            raise CommandError("--backfill-from needs a time zone, e.g. 2026-11-01T00:00:00+00:00")
        try:
            result = subscriptions_create(inst_ids=inst_ids, bars=bars, backfill_from=backfill_from, price=price)
        except (UnknownNames, PriceSeriesError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{len(result.created)} created, {len(result.reactivated)} resumed, "
                          f"{len(result.unchanged)} already active")
