"""The admin's candle list and the counts behind it, plain vs partitioned (the databases upsert_compare.py built).

    .venv/bin/python bench/storage_spike/admin_counts.py
"""

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ["DJANGO_SETTINGS_MODULE"] = "okxproject.settings"
os.environ["DATABASE_URL"] = "postgres://postgres@127.0.0.1:5432/okx_wt_f_plain"
os.environ["LOG_LEVEL"] = "WARNING"
os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost")
import django

django.setup()
import upsert_compare as uc  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

PAGES = {
    "unfiltered": "/admin/candles/candlerecord/",
    "bar=1s": "/admin/candles/candlerecord/?timeframe__id__exact=1",
    "search BTC-USDT": "/admin/candles/candlerecord/?q=BTC-USDT",
    "bar=1m, day drill-down": "/admin/candles/candlerecord/?timeframe__id__exact=2&open_time__day=15"
                              "&open_time__month=11&open_time__year=2026",
}
COUNTS = {
    "exact count(*)": "SELECT count(*) FROM candles_candle",
    "reltuples of the parent": "SELECT reltuples::bigint FROM pg_class WHERE relname = 'candles_candle'",
    "reltuples summed over leaves": "SELECT sum(c.reltuples)::bigint FROM pg_partition_tree('candles_candle') t "
                                    "JOIN pg_class c ON c.oid = t.relid WHERE t.isleaf AND c.reltuples > 0",
    "bounded count (10,001), bar=1s": "SELECT count(*) FROM (SELECT 1 FROM candles_candle WHERE timeframe_id = 1 "
                                      "LIMIT 10001) s",
    "exact count, bar=1s": "SELECT count(*) FROM candles_candle WHERE timeframe_id = 1",
}
for kind, db in uc.DBS.items():
    uc.use(db)
    user, _ = get_user_model().objects.get_or_create(username="spike", defaults={"is_staff": True,
                                                                                "is_superuser": True})
    client = Client()
    client.force_login(user)
    for label, url in PAGES.items():
        times, slowest = [], None
        for _ in range(3):
            with CaptureQueriesContext(connection) as ctx:
                started = time.perf_counter()
                response = client.get(url)
                times.append(time.perf_counter() - started)
            assert response.status_code == 200, (url, response.status_code)
            slowest = max(ctx.captured_queries, key=lambda q: float(q["time"]))
        print(f"{kind:<12} admin {label:<24} median {1000 * statistics.median(times):7.0f} ms; slowest query "
              f"{1000 * float(slowest['time']):.0f} ms: {slowest['sql'][:110]}")
    with connection.cursor() as cur:
        for label, sql in COUNTS.items():
            if kind == "plain" and "leaves" in label:
                continue
            started = time.perf_counter()
            cur.execute(sql)
            value = cur.fetchone()[0]
            print(f"{kind:<12} {label:<32} {value!s:>12}  {1000 * (time.perf_counter() - started):8.1f} ms")
connection.close()
