"""The Parquet archive's files in the admin: read-only, as candles/archive.py wrote and verified them."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat
from django.utils.html import format_html

from candles.models import ArchiveFile, ArchiveStatus

STATUS_COLOURS = {ArchiveStatus.OK: "#1a7f37", ArchiveStatus.WRITTEN: "#bf8700", ArchiveStatus.FAILED: "#cf222e"}


@admin.register(ArchiveFile)
class ArchiveFileAdmin(admin.ModelAdmin):
    """Written only by candles.archive.archive_write; an operator reads it to see what may be dropped."""

    list_display = ("timeframe", "day", "status_badge", "rows", "instruments", "size", "path", "source_table",
                    "verified_at")
    list_filter = ("timeframe", "status", ("start", admin.DateFieldListFilter))
    search_fields = ("path", "source_table", "sha256")
    ordering = ("-start", "timeframe__display_order")
    list_select_related = ("timeframe",)
    list_per_page = 100
    fields = ("timeframe", "start", "end", "status", "error", "rows", "instruments", "bytes", "path", "sha256",
              "source_table", "inst_ids", "created_at", "updated_at", "verified_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: ArchiveFile | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ArchiveFile | None = None) -> bool:
        # A row without its file (or a file without its row) would misreport what the archive holds.
        return False

    @admin.display(description="day (UTC)", ordering="start")
    def day(self, obj: ArchiveFile) -> str:
        return obj.start.date().isoformat()

    @admin.display(description="size", ordering="bytes")
    def size(self, obj: ArchiveFile) -> str:
        return filesizeformat(obj.bytes)

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: ArchiveFile):
        return format_html(
            '<span style="background:{};color:#fff;border-radius:8px;padding:1px 8px;font-size:11px;'
            'white-space:nowrap">{}</span>', STATUS_COLOURS.get(obj.status, "#6e7781"), obj.get_status_display())
