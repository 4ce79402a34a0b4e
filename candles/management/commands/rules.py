"""Subscription rules from the command line: list, add, remove, apply.

Every change goes through candles.rules: validated like the admin's form and the API, materialized at once.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from candles.models import InstrumentType, SubscriptionRule
from candles.rules import RuleOutcome, rule_create, rule_delete, rule_matches, rules_materialize
from okxproject.cli import add_price_argument, moment_option

EXAMPLES = """examples:
  manage.py rules add swaps --type SWAP --bar 1m --bar 1H
  manage.py rules add usdt --quote USDT --all-bars
  manage.py rules add btc-1s --pattern BTC-USDT --bar 1s --backfill-from 2026-11-01
  manage.py rules add swap-marks --price mark --type SWAP --bar 1m --bar 1H
  manage.py rules add usd-indices --price index --quote USD --bar 1m
  manage.py rules list
  manage.py rules remove swaps
  manage.py rules apply
"""


class Command(BaseCommand):
    help = ("Declare what to collect as rules (instrument filters × bars); their subscriptions follow new "
            "listings, expiries and delistings by themselves. Subcommands: list, add, remove, apply.")

    def create_parser(self, prog_name: str, subcommand: str, **kwargs):
        from argparse import RawDescriptionHelpFormatter

        parser = super().create_parser(prog_name, subcommand, epilog=EXAMPLES,
                                       formatter_class=RawDescriptionHelpFormatter, **kwargs)
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{list,add,remove,apply}")
        actions.add_parser("list", help="the rules, with what each matches now and the subscriptions it holds")
        add = actions.add_parser("add", help="declare a rule and subscribe what it matches at once")
        add.add_argument("name", help="a unique name")
        add_price_argument(add, note="mark and index have no 1s")
        add.add_argument("--type", dest="inst_type", default="", choices=InstrumentType.values,
                         help="instrument type (default: every type)")
        add.add_argument("--quote", dest="quote_ccy", default="",
                         help="quote currency, e.g. USDT (a swap's, future's or index's is its id's second part)")
        add.add_argument("--settle", dest="settle_ccy", default="", help="settle currency, e.g. USDT")
        add.add_argument("--pattern", dest="inst_id_pattern", default="",
                         help="instId glob: * any run, ? one character (BTC-*, *-USDT-SWAP); default: all")
        bars = add.add_mutually_exclusive_group(required=True)
        bars.add_argument("-b", "--bar", dest="bars", action="append", default=[],
                          help="bar code, case-sensitive (1m is a minute, 1M a month); repeatable")
        bars.add_argument("--all-bars", action="store_true", help="every active bar, now and later")
        add.add_argument("--backfill-from", default=None,
                         help="history start of its subscriptions (ISO 8601, naive is UTC, or epoch ms)")
        add.add_argument("--webhook-url", default="", help="receiver of a signed POST per confirmed candle")
        add.add_argument("--description", default="")
        add.add_argument("--inactive", action="store_true", help="save it switched off (subscribes nothing)")
        remove = actions.add_parser("remove", help="delete a rule; subscriptions only it matched end (paused)")
        remove.add_argument("name")
        actions.add_parser("apply", help="bring subscriptions in line with the rules now (the sync does it too)")

    def handle(self, *args, action: str, **options) -> None:
        getattr(self, f"_{action}")(**options)

    def _list(self, **options) -> None:
        rules = list(SubscriptionRule.objects.all())
        if not rules:
            self.stdout.write("no rules")
            return
        rows = [("name", "active", "price", "type", "quote", "settle", "pattern", "bars", "matches", "held")]
        for rule in rules:
            matches = rule_matches(rule=rule)
            held = rule.subscriptions.filter(is_active=True).count()
            rows.append((rule.name, "yes" if rule.is_active else "no", rule.price, rule.inst_type or "*",
                         rule.quote_ccy or "*", rule.settle_ccy or "*", rule.inst_id_pattern or "*",
                         "all" if rule.all_bars else ",".join(rule.bars),
                         f"{matches.instruments} × bars = {matches.pairs}", str(held)))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            self.stdout.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())

    def _add(self, *, name: str, backfill_from: str | None, inactive: bool, **options) -> None:
        fields = {key: options[key] for key in ("price", "inst_type", "quote_ccy", "settle_ccy", "inst_id_pattern",
                                                "all_bars", "bars", "webhook_url", "description")}
        try:
            outcome = rule_create(
                name=name, is_active=not inactive,
                backfill_from=None if backfill_from is None else moment_option("--backfill-from", backfill_from),
                **fields,
            )
        except ValidationError as exc:
            raise CommandError(_errors(exc)) from None
        self._report(outcome)

    def _remove(self, *, name: str, **options) -> None:
        rule = SubscriptionRule.objects.filter(name=name).first()
        if rule is None:
            known = ", ".join(SubscriptionRule.objects.values_list("name", flat=True)) or "none"
            raise CommandError(f"no rule {name!r} (rules: {known})")
        result = rule_delete(rule=rule)
        self.stdout.write(self.style.SUCCESS(f"rule {name!r} removed; subscriptions: {result}"))

    def _apply(self, **options) -> None:
        self.stdout.write(self.style.SUCCESS(f"subscriptions: {rules_materialize()}"))

    def _report(self, outcome: RuleOutcome) -> None:
        self.stdout.write(self.style.SUCCESS(
            f"rule {outcome.rule.name!r} saved: matches {outcome.matches.instruments} instruments "
            f"({outcome.matches.pairs} pairs); subscriptions: {outcome.materialized}"))
        for warning in outcome.warnings:
            self.stderr.write(self.style.WARNING(f"warning: {warning}"))


def _errors(exc: ValidationError) -> str:
    if not hasattr(exc, "error_dict"):
        return "invalid rule: " + " ".join(exc.messages)
    return "invalid rule: " + "; ".join(f"{name}: {' '.join(messages)}" for name, messages in exc.message_dict.items())
