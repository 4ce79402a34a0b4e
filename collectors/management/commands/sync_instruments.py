"""Bring the Instrument table in step with OKX's instrument list (settings.OKX_REST_URL).

The system runs it with `--if-empty` at start-up, so a fresh install has instruments to subscribe to
without refetching on every restart.
"""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from candles.models import Instrument
from collectors.instruments import DEFAULT_INST_TYPES, SYNCABLE_TYPES, indices_sync, instruments_sync
from collectors.okx.protocol import ProtocolError
from collectors.okx.rest import RestError
from collectors.shared.rest import okx_rest


class Command(BaseCommand):
    help = "Create, update and mark delisted instruments from OKX's public instrument list."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--type", dest="types", action="append", choices=SYNCABLE_TYPES, metavar="TYPE",
            help=f"instrument type to sync, repeatable: {', '.join(SYNCABLE_TYPES)} "
                 f"(default: {', '.join(DEFAULT_INST_TYPES)})",
        )
        parser.add_argument("--if-empty", action="store_true", help="do nothing if any instrument is stored")
        parser.add_argument("--retries", type=int, default=6, help="retries of a failing request (default 6)")

    def handle(self, *args, **options) -> None:
        types = list(dict.fromkeys(options["types"] or DEFAULT_INST_TYPES))
        if options["if_empty"]:
            stored = Instrument.objects.count()
            if stored:
                self.stdout.write(f"{stored} instruments already stored; nothing to do (--if-empty)")
                return
        url = settings.OKX_REST_URL
        self.stdout.write(f"syncing {', '.join(types)} instruments from {url}")
        retries = max(0, options["retries"])
        # Through the one REST access point: its requests draw on the budgets the workers share and show in
        # /metrics and the admin's budget bars.
        try:
            result = instruments_sync(inst_types=types, client=okx_rest(rest_url=url, max_retries=retries),
                                      on_fetched=self._fetched)
        except (RestError, ProtocolError) as exc:
            raise CommandError(f"instrument sync from {url} failed: {exc}") from exc
        self.stdout.write(self.style.SUCCESS(f"instruments: {result}"))
        self.stdout.write(f"subscriptions: {result.subscriptions}")
        try:
            indices = indices_sync(client=okx_rest(rest_url=url, max_retries=retries))
        except (RestError, ProtocolError) as exc:
            raise CommandError(f"index sync from {url} failed: {exc}") from exc
        self.stdout.write(self.style.SUCCESS(f"indices: {indices}"))

    def _fetched(self, inst_type: str, count: int) -> None:
        self.stdout.write(f"  {inst_type}: {count} listed")
