from django.db import migrations

DEFAULTS = [
    ("Stream dropped", "stream_dropped", 15),
    ("Server down", "server_down", 0),
]


def create(apps, schema_editor):
    AlertRule = apps.get_model("monitoring", "AlertRule")
    for name, condition, duration_s in DEFAULTS:
        if not AlertRule.objects.filter(condition=condition, server=None, application=None, key=None).exists():
            AlertRule.objects.create(name=name, condition=condition, duration_s=duration_s)


def remove(apps, schema_editor):
    AlertRule = apps.get_model("monitoring", "AlertRule")
    for name, condition, _ in DEFAULTS:
        AlertRule.objects.filter(name=name, condition=condition, server=None, application=None, key=None).delete()


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0003_alerts")]
    operations = [migrations.RunPython(create, remove)]
