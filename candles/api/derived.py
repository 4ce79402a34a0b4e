"""What /data adds for a derived bar (candles/derived.py): its 400, and the coverage of each row in JSON and CSV.

Kept out of views_data.py so that the view only routes a derived bar here; the rows themselves are ServedCandle-shaped
and go through the view's own rendering, whatever names it gives the fields.
"""

from __future__ import annotations

from collections.abc import Callable

from candles import bar_catalog
from candles.derived import GRAMMAR_HELP, DerivedBar, DerivedPage, NotDerivable, resolve
from okxproject.api_errors import ApiError

COVERAGE_KEYS = ("constituents", "expected")


def derived_or_400(code: str) -> DerivedBar | None:
    """None for a stored bar; the derived bar otherwise; 400 INVALID_TIMEFRAMES (the code every unknown bar gets)
    naming what can be asked for when the name is neither."""
    try:
        return resolve(code)
    except NotDerivable as exc:
        stored = sorted(bar_catalog.timeframe_ids(), key=bar_catalog.timeframe_ids().get)
        raise ApiError(
            f"{exc}. Bars: the stored OKX bars ({' '.join(stored)}) or any {GRAMMAR_HELP}.",
            code="INVALID_TIMEFRAMES", status=400,
            details={"invalid_timeframes": [code], "stored_bars": stored, "derived_bars": GRAMMAR_HELP},
        ) from None


def annotate(body: dict, rows: list[dict], bar: DerivedBar, page: DerivedPage) -> None:
    """The stored bar the page is built from, and each row's constituents and expected count (a gap shows)."""
    body["derived_from"] = bar.source
    for row, (present, expected) in zip(rows, page.coverage, strict=True):
        row["constituents"] = present
        row["expected"] = expected


def csv_header(header: str) -> str:
    return header.rstrip("\n") + "," + ",".join(COVERAGE_KEYS) + "\n"


def csv_lines(lines: Callable[[list], str], page: DerivedPage, rows: list) -> str:
    """`lines(rows)`, each line followed by its row's constituents and expected count."""
    return "".join(
        f"{line},{present},{expected}\n"
        for line, (present, expected) in zip(lines(rows).splitlines(), page.coverage, strict=False)
    )
