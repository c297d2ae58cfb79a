"""Forms of the admin's extra pages: zip upload, test, and image checks for single items."""

from django import forms
from django.core.files.uploadedfile import UploadedFile

from management.models import DataSet, DataSetItem
from management.services.datasets import image_check
from management.services.errors import ServiceError


class ZipUploadForm(forms.Form):
    """A zip of images for one dataset, with one label for all or one per top-level folder."""

    dataset = forms.ModelChoiceField(queryset=DataSet.objects.all())
    file = forms.FileField(label="Zip file", help_text="A .zip of images (PNG, JPEG, GIF, BMP, TIFF, WebP…).")
    label = forms.CharField(
        required=False,
        max_length=100,
        help_text=(
            "The label of every image in the zip. Leave it empty to label each image by the "
            "top-level folder it is in (circle/1.png gets the label 'circle')."
        ),
    )


class ModelImportForm(forms.Form):
    """A trained .keras model and its labels, as a new version of a dataset."""

    file = forms.FileField(label="Model file", help_text="A Keras model saved with model.save('name.keras').")
    labels = forms.CharField(
        help_text="The labels in the model's output order, separated by commas (cat,dog) or as a JSON list."
    )


class TestForm(forms.Form):
    """An image to classify with a dataset's current model."""

    dataset = forms.ModelChoiceField(
        queryset=DataSet.objects.filter(current_run__isnull=False),
        empty_label=None,
        help_text="Only datasets with a trained model are listed.",
    )
    image = forms.FileField(help_text="Any image: it is resized and converted as the model was trained.")

    def clean_image(self):
        # The prediction service decodes and judges the image; decoding it here too would be waste.
        file = self.cleaned_data["image"]
        return file.name, file.read()


class DataSetItemForm(forms.ModelForm):
    """A single labelled image; the file is fully decoded before it is accepted."""

    class Meta:
        model = DataSetItem
        fields = ["dataset", "label", "image"]

    def clean_label(self):
        label = " ".join(self.cleaned_data["label"].split())
        if not label:
            raise forms.ValidationError("A label cannot be empty.")
        return label

    def clean_image(self):
        image = self.cleaned_data["image"]
        if isinstance(image, UploadedFile):
            image.seek(0)
            data = image.read()
            image.seek(0)
            try:
                image_check(data, name=image.name)
            except ServiceError as error:
                raise forms.ValidationError(error.message) from None
        return image


class DataSetForm(forms.ModelForm):
    """Dataset options, with the model code in a monospaced editor."""

    class Meta:
        model = DataSet
        fields = "__all__"
        widgets = {
            "process": forms.Textarea(attrs={"rows": 24, "cols": 100, "spellcheck": "false", "class": "kerasui-code"}),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "architecture" in self.fields:
            _label_pretrained_choices(self.fields["architecture"])
        if "fine_tune_seconds" in self.fields:
            # Left empty (or left out of a form made before it existed): no fine-tuning.
            self.fields["fine_tune_seconds"].required = False

    def clean_fine_tune_seconds(self):
        return self.cleaned_data.get("fine_tune_seconds") or 0


def _label_pretrained_choices(field) -> None:
    """Say beside each pretrained starting point whether its weights are here; the page's script sets
    the image size to 224 when one is picked (data attributes)."""
    from management.ml.backbones import DEFAULT_IMAGE_SIZE, MIN_IMAGE_SIZE
    from management.services.pretrained import backbone_statuses

    present = {status.name: status.cached for status in backbone_statuses()}
    field.choices = [
        (value, f"{label} — weights {'present' if present[value] else 'missing: see python manage.py weights'}")
        if value in present
        else (value, label)
        for value, label in field.choices
    ]
    field.widget.attrs.update(
        {
            "data-pretrained": " ".join(present),
            "data-pretrained-size": str(DEFAULT_IMAGE_SIZE),
            "data-pretrained-min-size": str(MIN_IMAGE_SIZE),
        }
    )
