"""The archive files' admin screen: staff see every file with its day, size, rows and status; nobody edits it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from candles.models import ArchiveFile, ArchiveStatus, Timeframe

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    user = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw-for-tests")
    client.force_login(user)
    return client


@pytest.fixture
def archived() -> ArchiveFile:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    return ArchiveFile.objects.create(
        timeframe=Timeframe.objects.get(code="1s"), start=start, end=start + timedelta(days=1), rows=1_036_800,
        instruments=12, inst_ids=["BTC-USDT"], bytes=27_100_000, sha256="ab" * 32, status=ArchiveStatus.FAILED,
        error="rows differ from the table for BTC-USDT", path="/srv/archive/1s/2026/1s_2026-12-01.parquet",
        source_table="candles_candle_1s_20261201")


def test_the_list_shows_day_size_rows_status_and_path(staff_client, archived):
    response = staff_client.get(reverse("admin:candles_archivefile_changelist"))

    assert response.status_code == 200
    page = response.content.decode()
    for text in ("2026-12-01", "25.8\xa0MB", "1036800", "verification failed", archived.path):
        assert text in page, text


def test_the_list_filters_by_bar_and_status(staff_client, archived):
    url = reverse("admin:candles_archivefile_changelist")

    assert archived.path in staff_client.get(f"{url}?status__exact=failed").content.decode()
    assert archived.path not in staff_client.get(f"{url}?status__exact=ok").content.decode()
    other = Timeframe.objects.get(code="1m").pk
    assert archived.path not in staff_client.get(f"{url}?timeframe__id__exact={other}").content.decode()


def test_a_file_opens_read_only_and_cannot_be_added_or_deleted(staff_client, archived):
    detail = staff_client.get(reverse("admin:candles_archivefile_change", args=[archived.pk]))

    assert detail.status_code == 200
    assert "rows differ from the table for BTC-USDT" in detail.content.decode()
    assert 'name="_save"' not in detail.content.decode()
    assert staff_client.get(reverse("admin:candles_archivefile_add")).status_code == 403
    assert staff_client.post(reverse("admin:candles_archivefile_delete", args=[archived.pk])).status_code == 403
    assert ArchiveFile.objects.filter(pk=archived.pk).exists()
