"""Storage figures per bar for operators (the admin dashboard, /metrics, `manage.py maintain_storage`).

Everything comes from the catalogue and the statistics collector (`partition_list`: sizes and live tuples per
leaf), never from a count(*) over candles, so it costs a few milliseconds however many rows are stored.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.apps import apps
from django.db.models import Count, Sum

from candles.retention import BarPlan, retention_plan


@dataclass(frozen=True, slots=True)
class BarStorage:
    bar: str
    retention: timedelta | None
    horizon: datetime | None
    archive: bool
    next_drop: datetime | None
    leaves: int  # attached and detach-pending
    due: int  # of those, past the horizon (dropped by the next maintenance run)
    retired: int  # detached by retention, waiting for their archive or drop
    bytes: int  # leaves and retired tables, indexes included
    rows: int  # live rows of the leaves, from the statistics collector
    archive_files: int | None = None  # None: the archive is not installed
    archive_bytes: int | None = None

    @classmethod
    def of(cls, plan: BarPlan, archive: tuple[int, int] | None) -> BarStorage:
        return cls(plan.bar, plan.retention, plan.horizon, plan.archive, plan.next_drop, len(plan.leaves),
                   len(plan.due), len(plan.retired), plan.bytes, plan.live_rows,
                   *(archive if archive is not None else (None, None)))


def archive_totals() -> dict[str, tuple[int, int]] | None:
    """(verified files, bytes) per bar in the Parquet archive; None when the archive is not installed."""
    if importlib.util.find_spec("candles.archive") is None:
        return None
    try:
        archive_file = apps.get_model("candles", "ArchiveFile")
    except LookupError:
        return None
    rows = (archive_file.objects.filter(status="ok").order_by().values("timeframe__code")
            .annotate(files=Count("pk"), bytes=Sum("bytes")))
    return {row["timeframe__code"]: (row["files"], row["bytes"] or 0) for row in rows}


def storage_by_bar(*, now: datetime) -> list[BarStorage]:
    """Every bar that has partitions, in display order."""
    archives = archive_totals()
    return [BarStorage.of(plan, None if archives is None else archives.get(plan.bar, (0, 0)))
            for plan in retention_plan(now=now)]
