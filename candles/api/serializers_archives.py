"""Serializers of the Parquet archive's file list (GET /archives): response shapes only."""

from __future__ import annotations

from rest_framework import serializers

from candles.api.serializers import InstantField
from candles.models import ArchiveFile, ArchiveStatus


class ArchiveFileSerializer(serializers.ModelSerializer):
    bar = serializers.CharField(source="timeframe.code", help_text="Bar code, case-sensitive (1m, 1M).")
    day = serializers.SerializerMethodField(help_text="The UTC day the file holds (open times from start to end).")
    start = InstantField(help_text="00:00 UTC of the day.")
    end = InstantField(help_text="00:00 UTC of the next day (exclusive).")
    rows = serializers.IntegerField(help_text="Candles in the file.")
    instruments = serializers.IntegerField(help_text="Series in the file: an instrument's trade candles, its "
                                                     "mark-price candles and an index each count once.")
    bytes = serializers.IntegerField(help_text="File size in bytes.")
    status = serializers.ChoiceField(
        choices=ArchiveStatus.choices,
        help_text="ok: read back and matched PostgreSQL's checksum; written: not verified yet; failed: did not match "
                  "(the partition was kept).")
    sha256 = serializers.CharField(help_text="sha256 of the rows' canonical text, as in the file's metadata "
                                             "(docs/archive.md).")
    table = serializers.CharField(source="source_table", help_text="The partition the rows were read from.")

    class Meta:
        model = ArchiveFile
        fields = ["id", "bar", "day", "start", "end", "rows", "instruments", "bytes", "path", "sha256", "status",
                  "error", "table", "created_at", "updated_at", "verified_at"]
        read_only_fields = fields

    def get_day(self, item: ArchiveFile) -> str:
        # Stored and read in UTC (USE_TZ), so the datetime's date is the UTC day.
        return item.start.date().isoformat()


class ArchivePageSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = ArchiveFileSerializer(many=True)
