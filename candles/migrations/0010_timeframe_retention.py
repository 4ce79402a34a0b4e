"""Retention per bar (issue 15): how long a bar's candles are kept, and whether they are archived first.

`1s` keeps 7 days (86 M candles a day at the full firehose, about 12 GB); every other bar is kept forever
until an operator says otherwise. `GapState.EXPIRED` marks gaps behind a horizon: a state of the choices
only, nothing changes in the database.
"""

from datetime import timedelta

from django.db import migrations, models

SECOND_BAR_RETENTION = timedelta(days=7)


def keep_a_week_of_seconds(apps, schema_editor):
    apps.get_model("candles", "Timeframe").objects.filter(code="1s").update(retention=SECOND_BAR_RETENTION)


class Migration(migrations.Migration):
    dependencies = [("candles", "0009_subscription_fillfactor")]

    operations = [
        migrations.AddField(
            model_name="timeframe",
            name="retention",
            field=models.DurationField(
                blank=True, null=True,
                help_text="How long candles of this bar are kept, counted back from now (e.g. 7 days). Empty: "
                          "forever. Whole partitions go once they lie wholly behind the horizon, so a little "
                          "more is kept.",
            ),
        ),
        migrations.AddField(
            model_name="timeframe",
            name="archive",
            field=models.BooleanField(default=False, help_text="Write a partition to Parquet before retention "
                                                               "drops it.", verbose_name="archive before dropping"),
        ),
        migrations.RunPython(keep_a_week_of_seconds, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="gap",
            name="state",
            field=models.CharField(
                choices=[("open", "Open"), ("filling", "Filling"), ("filled", "Filled"),
                         ("unfillable", "Unfillable"), ("expired", "expired by policy")],
                default="open", max_length=16,
            ),
        ),
    ]
