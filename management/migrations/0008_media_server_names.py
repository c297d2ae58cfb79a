"""Item images are named by the server from the format Pillow detects; existing files whose
extension says otherwise (cat.html holding a PNG, a .svg, anything not an image) are renamed.

The name a file was uploaded with becomes the item's `original_name`. A file missing from storage
is left alone (its row too); reversing this migration renames nothing back.
"""

import logging
import re
from pathlib import PurePosixPath

from django.core.files import File
from django.db import migrations, models, transaction

import datasets.models
from ml.images import image_extension, image_file_name, image_format

logger = logging.getLogger(__name__)

# Before this migration a stored name was "<12 hex>-<the sender's name>".
OLD_PREFIX = re.compile(r"^[0-9a-f]{12}-")


def rename_item_files(apps, schema_editor):
    Item = apps.get_model("management", "DataSetItem")
    storage = Item._meta.get_field("image").storage
    renamed, missing, replaced = 0, 0, []
    for item in Item.objects.exclude(image="").order_by("pk").iterator(chunk_size=500):
        old = item.image.name
        base = PurePosixPath(old).name
        original = datasets.models.original_file_name(OLD_PREFIX.sub("", base, count=1))
        try:
            with storage.open(old, "rb") as file:
                format = image_format(file)
                if PurePosixPath(old).suffix.lower() == f".{image_extension(format)}":
                    new = old
                else:
                    name = datasets.models.item_image_path(item, image_file_name(format))
                    new = storage.save(name, File(file))
        except (FileNotFoundError, OSError):
            missing += 1
            Item.objects.filter(pk=item.pk).update(original_name=original)
            continue
        Item.objects.filter(pk=item.pk).update(image=new, original_name=original)
        if new != old:
            renamed += 1
            replaced.append(old)

    def delete_old_files():
        for name in replaced:
            storage.delete(name)

    # The old files go only once the new names are committed: a failed migration loses nothing.
    transaction.on_commit(delete_old_files)
    if renamed or missing:
        logger.warning("item images: %d renamed to their detected format, %d missing from storage", renamed, missing)


class Migration(migrations.Migration):
    dependencies = [
        ("management", "0007_starting_point_help"),
    ]

    operations = [
        migrations.AddField(
            model_name="datasetitem",
            name="original_name",
            field=models.CharField(
                blank=True,
                help_text="The file's name as it was uploaded (the stored name is the server's).",
                max_length=255,
            ),
        ),
        migrations.AlterField(
            model_name="datasetitem",
            name="image",
            field=datasets.models.ServerNamedImageField(max_length=255, upload_to=datasets.models.item_image_path),
        ),
        migrations.RunPython(rename_item_files, migrations.RunPython.noop),
    ]
