"""How the admin counts the rows of its largest lists without counting them.

An exact `count(*)` of the candle table takes about 5 s at 30 M rows (docs/storage-design.md §5). An
unfiltered list shows an estimate instead: for the candle table, the live rows the statistics hold for each
leaf (the partitioned parent's own `reltuples` is never set by autovacuum), for other tables `reltuples`.
A filtered candle list counts at most `COUNT_BOUND` + 1 rows and says "10,000+" past that.
"""

from __future__ import annotations

from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db import connection, models
from django.utils.functional import cached_property

from candles.models import CandleRecord

COUNT_BOUND = 10_000
# Below this an estimate saves little and may be stale (a table just loaded, statistics not yet flushed).
_ESTIMATE_ABOVE = 100_000

_CANDLE_ROWS = """
SELECT coalesce(sum(pg_stat_get_live_tuples(relid)), 0)::bigint
FROM pg_partition_tree('candles_candle') WHERE isleaf
"""


def rows_estimate(model: type[models.Model]) -> int:
    """PostgreSQL's idea of how many rows the model's table holds, without reading them."""
    with connection.cursor() as cursor:
        if model is CandleRecord:  # a view over the candle table, whose leaves have the statistics
            cursor.execute(_CANDLE_ROWS)
        else:
            cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE relname = %s", [model._meta.db_table])
        row = cursor.fetchone()
    return row[0] if row else 0


class EstimatedCountPaginator(Paginator):
    """Counting every row of a large table on each page view is slow: an unfiltered list uses PostgreSQL's
    estimate (`rows_estimate`), a filtered one the exact count, or at most `count_bound` + 1 when set."""

    count_bound: int | None = None

    @cached_property
    def count(self) -> int:
        query = getattr(self.object_list, "query", None)
        if query is None:
            return super().count
        if not query.where:
            estimate = rows_estimate(self.object_list.model)
            if estimate > _ESTIMATE_ABOVE:
                return estimate
            return super().count
        if self.count_bound is not None:
            # Unordered: the bound is reached by reading rows, not by sorting every match first.
            return self.object_list.order_by()[: self.count_bound + 1].count()
        return super().count


class BoundedCountPaginator(EstimatedCountPaginator):
    count_bound = COUNT_BOUND


class BoundedCountChangeList(ChangeList):
    """Gives the templates `result_count_label`: "10,000+" where the paginator stopped counting."""

    def get_results(self, request) -> None:
        super().get_results(request)
        bound = getattr(self.paginator, "count_bound", None)
        bounded = bound is not None and self.result_count > bound
        self.result_count_label = f"{bound:,}+" if bounded else f"{self.result_count:,}"
