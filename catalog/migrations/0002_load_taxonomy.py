"""Load the default taxonomy (classifier/data/taxonomy.json) into Category."""

from django.conf import settings
from django.db import migrations

from catalog.taxonomy import taxonomy_sync


def load(apps, schema_editor):
    taxonomy_sync(apps.get_model("catalog", "Category"), settings.TAXONOMY_PATH)


class Migration(migrations.Migration):
    dependencies = [("catalog", "0001_initial")]

    operations = [migrations.RunPython(load, migrations.RunPython.noop)]
