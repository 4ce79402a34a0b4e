"""Seed every OKX bar listed in shared/okx/PROTOCOL.md (27 of them).

The anchor of a fixed-length bar is one of its open times. Hong Kong bars (6H and longer without `utc`)
are anchored at midnight UTC+8; weekly bars on a Monday, as OKX's weekly candles open on Mondays.
Multi-day bars (2D, 3D, 5D) are anchored at the epoch's first day in their zone: OKX does not document
their phase, so the anchor stays editable in the admin.
"""

from datetime import UTC, datetime, timedelta

from django.db import migrations

MIN, HOUR, DAY = 60, 3600, 86400

# code, seconds, months, utc_offset_hours, REST /candles, REST /history-candles
BARS = [
    ("1s", 1, 0, 0, False, True),
    ("1m", MIN, 0, 0, True, True),
    ("3m", 3 * MIN, 0, 0, True, True),
    ("5m", 5 * MIN, 0, 0, True, True),
    ("15m", 15 * MIN, 0, 0, True, True),
    ("30m", 30 * MIN, 0, 0, True, True),
    ("1H", HOUR, 0, 0, True, True),
    ("2H", 2 * HOUR, 0, 0, True, True),
    ("4H", 4 * HOUR, 0, 0, True, True),
    ("6H", 6 * HOUR, 0, 8, True, True),
    ("12H", 12 * HOUR, 0, 8, True, True),
    ("1D", DAY, 0, 8, True, True),
    ("2D", 2 * DAY, 0, 8, True, True),
    ("3D", 3 * DAY, 0, 8, True, True),
    ("5D", 5 * DAY, 0, 8, False, False),
    ("1W", 7 * DAY, 0, 8, True, True),
    ("1M", 0, 1, 8, True, True),
    ("3M", 0, 3, 8, True, True),
    ("6Hutc", 6 * HOUR, 0, 0, True, True),
    ("12Hutc", 12 * HOUR, 0, 0, True, True),
    ("1Dutc", DAY, 0, 0, True, True),
    ("2Dutc", 2 * DAY, 0, 0, True, True),
    ("3Dutc", 3 * DAY, 0, 0, True, True),
    ("5Dutc", 5 * DAY, 0, 0, False, False),
    ("1Wutc", 7 * DAY, 0, 0, True, True),
    ("1Mutc", 0, 1, 0, True, True),
    ("3Mutc", 0, 3, 0, True, True),
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FIRST_MONDAY = EPOCH + timedelta(days=4)  # 1970-01-05


def anchor_for(seconds: int, offset_hours: int) -> datetime:
    base = FIRST_MONDAY if seconds == 7 * DAY else EPOCH
    return base - timedelta(hours=offset_hours)


def seed(apps, schema_editor):
    Timeframe = apps.get_model("candles", "Timeframe")
    for order, (code, seconds, months, offset, rest_candles, rest_history) in enumerate(BARS, start=1):
        Timeframe.objects.update_or_create(
            code=code,
            defaults={
                "seconds": seconds,
                "months": months,
                "utc_offset_hours": offset,
                "anchor": anchor_for(seconds, offset),
                "rest_candles": rest_candles,
                "rest_history": rest_history,
                "display_order": order * 10,
                "is_active": True,
            },
        )


def unseed(apps, schema_editor):
    apps.get_model("candles", "Timeframe").objects.filter(code__in=[bar[0] for bar in BARS]).delete()


class Migration(migrations.Migration):
    dependencies = [("candles", "0001_initial")]
    operations = [migrations.RunPython(seed, unseed)]
