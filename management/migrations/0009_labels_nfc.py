"""Existing labels in NFC, as new ones are: 'café' typed two ways becomes one label."""

import unicodedata

from django.db import migrations


def labels_to_nfc(apps, schema_editor):
    DataSetItem = apps.get_model("management", "DataSetItem")
    TrainingRun = apps.get_model("management", "TrainingRun")
    for item in DataSetItem.objects.only("id", "label").iterator():
        label = unicodedata.normalize("NFC", item.label)
        if label != item.label:
            DataSetItem.objects.filter(pk=item.pk).update(label=label)
    # A run's labels name its model's outputs, in order: normalised in place, unless two would merge.
    for run in TrainingRun.objects.only("id", "labels").iterator():
        labels = [unicodedata.normalize("NFC", label) for label in run.labels]
        if labels != run.labels and len(set(labels)) == len(labels):
            TrainingRun.objects.filter(pk=run.pk).update(labels=labels)


class Migration(migrations.Migration):
    dependencies = [("management", "0008_media_server_names")]

    operations = [migrations.RunPython(labels_to_nfc, migrations.RunPython.noop)]
