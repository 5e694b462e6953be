"""Staff permissions by name (review, bulk accept, training, bulk jobs) and the two groups that
bundle them, "reviewer" and "model manager" (catalog.access)."""

from django.db import migrations

from catalog.access import staff_groups_ensure


def groups_create(apps, schema_editor):
    # Permissions are normally created after the last migration (post_migrate); create this
    # app's now, from the migration state, so the groups can refer to them.
    from django.contrib.auth.management import create_permissions

    app_config = apps.get_app_config("catalog")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0, using=schema_editor.connection.alias)
    app_config.models_module = None
    staff_groups_ensure(apps.get_model("auth", "Group"), apps.get_model("auth", "Permission"))


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0005_review_registry_training"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="bulkjob",
            options={
                "ordering": ["-created_at", "-id"],
                "permissions": [
                    ("run_bulkjob", "Can cancel, resume and retry bulk jobs"),
                    ("apply_bulkjob", "Can apply a dry run or start a job that writes suggestions"),
                ],
            },
        ),
        migrations.AlterModelOptions(
            name="listing",
            options={
                "ordering": ["-created_at", "-id"],
                "permissions": [
                    ("review_listing", "Can review listings' categories (accept, correct, reject)"),
                    ("bulk_accept_listing", "Can accept the first suggestion of many listings at once"),
                ],
            },
        ),
        migrations.AlterModelOptions(
            name="modelversion",
            options={
                "ordering": ["-created_at"],
                "permissions": [
                    ("activate_modelversion", "Can activate or roll back a model version"),
                    ("train_modelversion", "Can train new versions and compare them with the active one"),
                ],
            },
        ),
        migrations.RunPython(groups_create, migrations.RunPython.noop),
    ]
