from django.db import migrations


class Migration(migrations.Migration):
    """Room on each page for the new version of a subscription row: detection moves the watermarks of
    thousands of series every few seconds, and with free space on the page those updates are HOT (no index
    entry rewritten)."""

    dependencies = [("candles", "0008_subscription_rules")]

    operations = [
        migrations.RunSQL("ALTER TABLE candles_subscription SET (fillfactor = 50)",
                          "ALTER TABLE candles_subscription RESET (fillfactor)"),
    ]
