"""Suggestions and cached embeddings lose their index on the photo alone: the unique (photo, model
version) and (photo, backbone version) indexes start with the photo and serve the same lookups
(and the cascade when a photo is deleted). A bulk job writes one suggestion per photo, so one
index less is one index write less per photo."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0009_embedding_outputs_float16"),
    ]

    operations = [
        migrations.AlterField(
            model_name="categorysuggestion",
            name="image",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="suggestions",
                to="catalog.listingimage",
            ),
        ),
        migrations.AlterField(
            model_name="imageembedding",
            name="image",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="embeddings",
                to="catalog.listingimage",
            ),
        ),
    ]
