"""format=parquet of GET /data/{symbol}/{timeframe}: every candle of the range as one streamed Parquet file.

The file is written while it is sent, by a streaming writer rather than into a temporary file: pyarrow writes
the magic bytes at once, each row group's bytes as soon as the group is complete, and the footer (which only
points back at byte offsets already sent) at the end. So the first bytes leave after the first query, memory is
one row group (candles.parquet.ROW_GROUP_ROWS) whatever the range, and no disk is involved; a spooled file would
hold the whole answer back until the last row was read and need disk for large ranges. The pages are the same
reads as CSV's (candle_list_text, same filters, order, limit and cursors), so the three formats agree row for row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime

from django.http import StreamingHttpResponse

from candles import parquet
from candles.parquet import MEDIA_TYPE, stream_pages
from candles.reads import CandlePage
from candles.retention import iso_z

# Rows per query, as CSV's: the writer gathers them into row groups.
PAGE_ROWS = 5000
# Read when a response starts (tests make it small to see several row groups stream out).
ROW_GROUP_ROWS = parquet.ROW_GROUP_ROWS


def parquet_response(first: CandlePage, read: Callable[[str | None, int], CandlePage], limit: int | None, *,
                     symbol: str, timeframe: str, descending: bool, horizon: datetime | None,
                     horizon_header: str) -> StreamingHttpResponse:
    """The streamed file, starting with `first` (read already, so that a bad cursor was a 400, not a broken
    stream); `horizon` when the range reaches behind the bar's retention horizon (also in the file's metadata)."""
    metadata = {"symbol": symbol, "bar": timeframe, "sort": "desc" if descending else "asc"}
    if horizon is not None:
        metadata["retention_horizon"] = iso_z(horizon)
    # The API's rows lead with the open time as ISO text; the file's timestamp column is made from the ms.
    body = stream_pages(_pages(first, read, limit), metadata=metadata, skip=1, row_group_rows=ROW_GROUP_ROWS)
    response = StreamingHttpResponse(body, content_type=MEDIA_TYPE)
    response["Content-Disposition"] = f'attachment; filename="{symbol}_{timeframe}.parquet"'
    if horizon is not None:
        response[horizon_header] = iso_z(horizon)
    return response


def _pages(first: CandlePage, read: Callable[[str | None, int], CandlePage], limit: int | None) -> Iterator[list]:
    """Pages of rows until the range (or `limit` rows) is exhausted."""
    page, left = first, limit
    while True:
        rows = page.candles if left is None else page.candles[:left]
        yield rows
        if left is not None:
            left -= len(rows)
        if page.next_cursor is None or left == 0:
            return
        page = read(page.next_cursor, PAGE_ROWS if left is None else min(left, PAGE_ROWS))
