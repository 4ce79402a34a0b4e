"""Subscription rules: what to collect, declared once, kept current as instruments come and go.

A rule matches the collectable instruments (state `live`, not delisted, not expired) that pass its filters,
times its bars. `rules_materialize` turns every active rule into subscriptions with a few set-based
statements, whatever the number of pairs: its cost is one pass over the matching pairs in SQL, never a
Python loop per subscription.

A rule has a price kind (`price`: trade, mark or index; docs/price-kinds.md) and matches the instrument rows of
that kind only: "every SWAP × mark × {1m, 1H}" subscribes the swaps' mark-price series and none of their trade
series, "every USD index × 1m" (price index, quote USD) the indices quoted in USD. Mark and index series have no
1s bar: a rule of them never lists it, and "all bars" means every active bar but 1s.

Ownership (`Subscription.rule`) and overlap, the semantics in one place:

* A subscription made by hand (API, admin, CLI) is explicit (`rule` null). No rule creates, changes, pauses
  or resumes it, even when a rule matches the same pair: the explicit one stays as the operator left it.
* A pair that no subscription holds yet and that a rule matches is created, held by that rule, with the
  rule's `backfill_from` and `webhook_url`. When several rules match one pair, the rule already holding it
  keeps it, else the oldest rule (lowest id) takes it; when its rule stops matching and another still
  matches, the other takes it over without a pause. A held subscription follows its rule's settings.
* A held subscription that no active rule matches any more (rule changed, deactivated, deleted, or the
  instrument left the filters) is ended: paused, `ended_at` set, `status_message` saying why.
* Ended by the system (expired, delisted, no rule) is not paused by an operator: a rule that matches an ended
  subscription again resumes it (and holds it), an explicit one included, while a subscription an operator
  paused stays paused. Subscribing a pair explicitly makes it explicit (the rule lets go of it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from candles.models import Subscription, SubscriptionRule
from candles.price_series import TRADE_ONLY_BARS
from candles.signals import subscriptions_changed
from candles.subscriptions import subscriptions_end_finished

logger = logging.getLogger(__name__)

# Serialises materializations (a sync and an admin edit at once) so both see each other's rows.
_ADVISORY_LOCK_KEY = 0x6F6B785F72756C65  # "okx_rule"

# Instruments worth collecting at `now`; the same test as subscriptions_end_finished's, inverted.
_COLLECTABLE = "i.state = 'live' AND i.delisted_at IS NULL AND (i.expires_at IS NULL OR i.expires_at > %(now)s)"


def _filters(col: Callable[[str], str]) -> str:
    """The instrument filters of a rule whose values `col(name)` gives (rule columns, or query parameters).

    The rule's price kind picks the instrument rows of that kind (docs/price-kinds.md): a mark rule matches the
    derivatives' mark rows, an index rule the INDEX rows, never the trade rows of the same ids.
    Swaps and futures have no quote currency in OKX's list; their instId's second part is it (BTC-USDT-SWAP is
    quoted in USDT). So is an index's (BTC-USD is quoted in USD): the sync stores the quote it was listed under,
    which need not be the id's. The glob becomes a LIKE pattern: `_` is escaped first (OKX ids contain it), then `*`
    and `?` turn into `%` and `_`; the model refuses `%`, `[` and `\\`, so nothing else needs escaping.
    """
    like = f"replace(replace(replace({col('inst_id_pattern')}, '_', '\\_'), '*', '%%'), '?', '_')"
    return (
        f"({col('inst_type')} = '' OR i.inst_type = {col('inst_type')})"
        f" AND ({col('quote_ccy')} = '' OR CASE WHEN i.inst_type = 'INDEX' THEN split_part(i.inst_id, '-', 2)"
        f" ELSE COALESCE(NULLIF(i.quote_ccy, ''), split_part(i.inst_id, '-', 2)) END = {col('quote_ccy')})"
        f" AND ({col('settle_ccy')} = '' OR i.settle_ccy = {col('settle_ccy')})"
        f" AND ({col('inst_id_pattern')} = '' OR i.inst_id LIKE {like})"
        f" AND i.price = {col('price')}"
    )


def _bars(col: Callable[[str], str]) -> str:
    """The active bars of a rule: its list, or every active bar; mark and index series have no 1s."""
    trade_only = ", ".join(f"'{code}'" for code in sorted(TRADE_ONLY_BARS))
    return (f"t.is_active AND ({col('all_bars')} OR t.code = ANY({col('bars')}))"
            f" AND ({col('price')} = 'trade' OR t.code NOT IN ({trade_only}))")


# Every pair some active rule matches, once, with the rule that should hold it: the one holding it already,
# else the oldest.
_DESIRED = f"""
SELECT DISTINCT ON (i.id, t.id) i.id AS instrument_id, t.id AS timeframe_id, r.id AS rule_id,
       r.backfill_from, r.webhook_url
FROM candles_subscriptionrule r
JOIN candles_instrument i ON {_filters(lambda name: f"r.{name}")}
JOIN candles_timeframe t ON {_bars(lambda name: f"r.{name}")}
LEFT JOIN candles_subscription s ON s.instrument_id = i.id AND s.timeframe_id = t.id
WHERE r.is_active AND {_COLLECTABLE}
ORDER BY i.id, t.id, (r.id IS NOT DISTINCT FROM s.rule_id) DESC, r.id
"""

# One statement: create what is missing, hand pairs to the right rule and bring held ones to its settings,
# resume what the system ended, end what no rule matches any more. The two data-modifying parts touch
# disjoint rows (matched vs not matched), as PostgreSQL requires.
_MATERIALIZE = f"""
WITH desired AS MATERIALIZED ({_DESIRED}),
upserted AS (
    INSERT INTO candles_subscription AS s (
        instrument_id, timeframe_id, rule_id, is_active, status, status_message, backfill_from, webhook_url,
        webhook_failures, webhook_last_error, created_at, updated_at)
    SELECT instrument_id, timeframe_id, rule_id, true, 'pending', '', backfill_from, webhook_url, 0, '',
           %(now)s, %(now)s
    FROM desired
    ON CONFLICT (instrument_id, timeframe_id) DO UPDATE SET
        rule_id = EXCLUDED.rule_id,
        is_active = s.is_active OR s.ended_at IS NOT NULL,
        status = CASE WHEN NOT s.is_active AND s.ended_at IS NOT NULL THEN 'pending' ELSE s.status END,
        status_message = CASE WHEN NOT s.is_active AND s.ended_at IS NOT NULL THEN '' ELSE s.status_message END,
        ended_at = NULL,
        backfill_from = EXCLUDED.backfill_from,
        webhook_url = EXCLUDED.webhook_url,
        updated_at = %(now)s
    WHERE (s.rule_id IS NOT NULL OR (NOT s.is_active AND s.ended_at IS NOT NULL))
      AND (s.rule_id IS DISTINCT FROM EXCLUDED.rule_id
           OR (NOT s.is_active AND s.ended_at IS NOT NULL)
           OR (s.is_active AND s.ended_at IS NOT NULL)
           OR s.backfill_from IS DISTINCT FROM EXCLUDED.backfill_from
           OR s.webhook_url <> EXCLUDED.webhook_url)
    RETURNING (xmax = 0) AS created
),
ended AS (
    UPDATE candles_subscription s
    SET is_active = false, ended_at = %(now)s, updated_at = %(now)s, status_message = %(ended_message)s,
        rule_id = CASE WHEN s.rule_id = ANY(%(deleting)s::bigint[]) THEN NULL ELSE s.rule_id END
    WHERE s.rule_id IS NOT NULL AND s.is_active
      AND NOT EXISTS (SELECT 1 FROM desired d
                      WHERE d.instrument_id = s.instrument_id AND d.timeframe_id = s.timeframe_id)
    RETURNING 1
)
SELECT (SELECT count(*) FROM upserted WHERE created),
       (SELECT count(*) FROM upserted WHERE NOT created),
       (SELECT count(*) FROM ended)
"""

# What one rule (saved or not, active or not) matches now, from its values as parameters.
_MATCHES = f"""
SELECT count(DISTINCT i.id), count(*)
FROM candles_instrument i
JOIN candles_timeframe t ON {_bars(lambda name: "%(bars)s::varchar[]" if name == "bars" else f"%({name})s")}
WHERE {_COLLECTABLE} AND {_filters(lambda name: f"%({name})s")}
"""


@dataclass(frozen=True, slots=True)
class MaterializeResult:
    created: int = 0
    updated: int = 0  # taken over by another rule, resumed, or brought to their rule's settings
    ended: int = 0  # no active rule matches them any more
    finished: int = 0  # their instrument expired or was delisted

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.ended or self.finished)

    def __str__(self) -> str:
        return (f"{self.created} created, {self.updated} updated, {self.ended} ended (no rule), "
                f"{self.finished} ended (expired or delisted)")


@dataclass(frozen=True, slots=True)
class RuleMatch:
    instruments: int
    pairs: int


@dataclass(slots=True)
class RuleOutcome:
    """A rule after a change, what it matches now, what materializing did, and what the operator should know."""

    rule: SubscriptionRule
    matches: RuleMatch
    materialized: MaterializeResult
    warnings: list[str] = field(default_factory=list)


def rules_materialize(*, now: datetime | None = None, deleting: Collection[int] = ()) -> MaterializeResult:
    """Bring subscriptions in line with the active rules (see the module's docstring); idempotent.

    First ends the active subscriptions of expired or delisted instruments. `deleting`: ids of (inactive)
    rules about to be deleted, whose ended subscriptions are let go of in the same write. Sends
    `subscriptions_changed` once, after commit, when anything changed.
    """
    now = now or timezone.now()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_ADVISORY_LOCK_KEY])
            finished = subscriptions_end_finished(now=now, notify=False)
            cursor.execute(_MATERIALIZE, {
                "now": now,
                "ended_message": f"no active rule matches since {now:%Y-%m-%d %H:%M} UTC",
                "deleting": list(deleting),
            })
            created, updated, ended = cursor.fetchone()
        result = MaterializeResult(created=created, updated=updated, ended=ended, finished=finished)
        if result.changed:
            transaction.on_commit(lambda: subscriptions_changed.send(sender=Subscription))
    if result.changed:
        logger.info("rules materialized: %s", result)
    return result


def rule_matches(*, rule: SubscriptionRule, now: datetime | None = None) -> RuleMatch:
    """What `rule` matches now (instruments, and pairs with its bars), whether it is saved or active or not."""
    params: dict[str, Any] = {
        name: getattr(rule, name) for name in ("inst_type", "quote_ccy", "settle_ccy", "inst_id_pattern", "price")
    }
    params.update(all_bars=rule.all_bars, bars=list(rule.bars or []), now=now or timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(_MATCHES, params)
        instruments, pairs = cursor.fetchone()
    return RuleMatch(instruments=instruments, pairs=pairs)


RULE_FIELDS = ("name", "description", "price", "inst_type", "quote_ccy", "settle_ccy", "inst_id_pattern",
               "all_bars", "bars", "backfill_from", "webhook_url", "is_active")


def rule_create(*, name: str, bars: list[str] | None = None, all_bars: bool = False, **fields: Any) -> RuleOutcome:
    """Validate and save a new rule, then materialize. Raises django's ValidationError for bad input.

    Other keyword arguments are the rule's fields (RULE_FIELDS).
    """
    unknown = set(fields) - set(RULE_FIELDS)
    if unknown:
        raise TypeError(f"not rule fields: {', '.join(sorted(unknown))}")
    rule = SubscriptionRule(name=name, bars=list(bars or []), all_bars=all_bars, **fields)
    return _save(rule)


def rule_update(*, rule: SubscriptionRule, **changes: Any) -> RuleOutcome:
    """Change a rule's fields (RULE_FIELDS), validate, save and materialize. Raises ValidationError."""
    unknown = set(changes) - set(RULE_FIELDS)
    if unknown:
        raise TypeError(f"not rule fields: {', '.join(sorted(unknown))}")
    for name, value in changes.items():
        setattr(rule, name, value)
    return _save(rule)


def rule_delete(*, rule: SubscriptionRule) -> MaterializeResult:
    """Delete a rule; the subscriptions only it matched end (paused, their candles stay)."""
    # Its ended subscriptions become explicit ended ones, which any matching rule may resume.
    return rules_delete(rules=SubscriptionRule.objects.filter(pk=rule.pk))


def rules_delete(*, rules: QuerySet[SubscriptionRule]) -> MaterializeResult:
    """Delete `rules` (the admin's bulk delete, and rule_delete); what only they matched ends."""
    with transaction.atomic():
        ids = list(rules.values_list("pk", flat=True))
        # Deactivated first, so materializing ends or hands over their pairs while they still hold them, and
        # lets go of the ended ones in the same write; what is left (rows paused by an operator) is cleared
        # here. Django's SET_NULL would load every subscription first (Subscription has delete signals): 2 s
        # for 27,000 before this.
        SubscriptionRule.objects.filter(pk__in=ids).update(is_active=False)
        result = rules_materialize(deleting=ids)
        Subscription.objects.filter(rule_id__in=ids).update(rule=None)
        SubscriptionRule.objects.filter(pk__in=ids).delete()
    return result


def rule_save_and_materialize(*, rule: SubscriptionRule) -> RuleOutcome:
    """For a rule the admin's form validated: save it and materialize."""
    return _save(rule, validated=True)


def _save(rule: SubscriptionRule, *, validated: bool = False) -> RuleOutcome:
    if not validated:
        rule.full_clean()
    with transaction.atomic():
        rule.save()
        materialized = rules_materialize()
    matches = rule_matches(rule=rule)
    warnings = []
    if not matches.instruments:
        # Not an error: a rule may wait for a listing (next quarter's futures). It must not pass unnoticed.
        warnings.append(f"Rule {rule.name!r} matches no collectable instrument now; it will subscribe "
                        "instruments that match when they are listed.")
    return RuleOutcome(rule=rule, matches=matches, materialized=materialized, warnings=warnings)
