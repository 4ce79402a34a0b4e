"""Leave a tenth of each candle page free so that rewrites of the open candle stay on their page (HOT
updates: no new index entry, dead versions pruned in place)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("candles", "0004_candle_without_db_foreign_keys")]
    operations = [
        migrations.RunSQL(
            "ALTER TABLE candles_candle SET (fillfactor = 90)",
            "ALTER TABLE candles_candle RESET (fillfactor)",
        ),
    ]
