import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("streams", "0003_publish_without_locks"),
    ]

    operations = [
        migrations.AddField(
            model_name="server",
            name="poll_interval_s",
            field=models.PositiveIntegerField(
                default=5,
                validators=[
                    django.core.validators.MinValueValidator(1),
                    django.core.validators.MaxValueValidator(3600),
                ],
                verbose_name="poll interval (s)",
            ),
        ),
    ]
