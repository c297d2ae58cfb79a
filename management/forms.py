"""Forms of the admin's extra pages: zip upload, test, and image checks for single items."""

from django import forms
from django.core.files.uploadedfile import UploadedFile

from datasets.models import DataSet, DataSetItem, original_file_name
from datasets.services import image_check, label_or_unlabelled
from management.errors import ServiceError
from management.options import Architecture, ColorMode, PromotionPolicy
from ml.backbones import DEFAULT_IMAGE_SIZE, MIN_IMAGE_SIZE
from training.pretrained import backbone_statuses


class ZipUploadForm(forms.Form):
    """A zip of images for a dataset, with one label for all or one per top-level folder; or an image and its label."""

    dataset = forms.ModelChoiceField(queryset=DataSet.objects.all())
    file = forms.FileField(
        label="Zip file",
        help_text="A .zip of images (PNG, JPEG, GIF, BMP, TIFF, WebP…), or a single image with its label typed below.",
    )
    label = forms.CharField(
        required=False,
        max_length=100,
        help_text=(
            "The label of every image in the zip. Leave it empty to label each image by the "
            "top-level folder it is in (circle/1.png gets the label 'circle')."
        ),
    )
    unlabelled = forms.BooleanField(
        required=False,
        label="Unlabelled",
        help_text="Import the images without labels, to label them later (with the model's suggestions).",
    )

    def is_zip(self) -> bool:
        return self.cleaned_data["file"].name.lower().endswith(".zip")

    def clean(self):
        cleaned = super().clean()
        has_label = bool((cleaned.get("label") or "").strip())
        if cleaned.get("unlabelled") and has_label:
            self.add_error("label", "Leave the label empty for unlabelled images, or untick Unlabelled.")
        elif cleaned.get("file") is not None and not self.is_zip() and not has_label and not cleaned.get("unlabelled"):
            self.add_error("label", "Type the label of this image, or tick Unlabelled (a zip can label by folder).")
        return cleaned


class ValidateForm(forms.Form):
    """The model as it is being edited, to validate instead of the saved one (each option left out: the saved)."""

    process = forms.CharField(required=False, strip=False)
    architecture = forms.ChoiceField(choices=Architecture.choices, required=False)
    image_size = forms.IntegerField(required=False, min_value=8, max_value=1024)
    color_mode = forms.ChoiceField(choices=ColorMode.choices, required=False)

    def overrides(self) -> dict:
        """The options sent; the model code even when empty (an editor cleared), the others when given."""
        given = {name: value for name, value in self.cleaned_data.items() if value not in (None, "")}
        if "process" in self.data:
            given["process"] = self.cleaned_data["process"]
        return given


class ModelImportForm(forms.Form):
    """A trained .keras model and its labels, as a new version of a dataset."""

    file = forms.FileField(label="Model file", help_text="A Keras model saved with model.save('name.keras').")
    labels = forms.CharField(
        help_text="The labels in the model's output order, separated by commas (cat,dog) or as a JSON list."
    )


class TestForm(forms.Form):
    """An image to classify with a dataset's current model, or with one of its versions."""

    dataset = forms.ModelChoiceField(
        queryset=DataSet.objects.filter(current_run__isnull=False),
        empty_label=None,
        help_text="Only datasets with a trained model are listed.",
    )
    run = forms.IntegerField(required=False, min_value=1, help_text="A version of the dataset; empty: the current one.")
    image = forms.FileField(help_text="Any image: it is resized and converted as the model was trained.")
    explain = forms.BooleanField(
        required=False,
        initial=True,
        label="Show what the model looked at",
        help_text="A heatmap over the image: where hiding a part lowers the predicted label's probability most.",
    )

    def clean_image(self):
        # The prediction service decodes and judges the image; decoding it here too would be waste.
        file = self.cleaned_data["image"]
        return file.name, file.read()


class ContentCheckedImageField(forms.ImageField):
    """An image judged by its bytes alone. Django's check of the name's extension is dropped: it let a
    PNG named cat.pdf through, and a PNG named cat.html is fine once the server has renamed it."""

    default_validators = []


class DataSetItemForm(forms.ModelForm):
    """A single labelled image; the file is fully decoded before it is accepted, and stored under a
    name the server gives it from its format (the name it came with is kept as its original name)."""

    class Meta:
        model = DataSetItem
        fields = ["dataset", "label", "image"]
        field_classes = {"image": ContentCheckedImageField}

    def clean_label(self):
        try:
            return label_or_unlabelled(self.cleaned_data["label"])
        except ServiceError as error:
            raise forms.ValidationError(error.message) from None

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
            self.instance.original_name = original_file_name(image.name)
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
        if "promotion_policy" in self.fields:
            # Left out of a form made before it existed: the default policy.
            self.fields["promotion_policy"].required = False
        for name in ("auto_seconds", "unknown_below"):
            if name in self.fields:
                # Left out of a form made before they existed: their defaults.
                self.fields[name].required = False

    def clean_fine_tune_seconds(self):
        return self.cleaned_data.get("fine_tune_seconds") or 0

    def clean_promotion_policy(self):
        return self.cleaned_data.get("promotion_policy") or PromotionPolicy.WHEN_BETTER

    def clean_auto_seconds(self):
        value = self.cleaned_data.get("auto_seconds")
        return DataSet._meta.get_field("auto_seconds").default if value is None else value

    def clean_unknown_below(self):
        return self.cleaned_data.get("unknown_below") or 0.0


def _label_pretrained_choices(field) -> None:
    """Say beside each pretrained starting point whether its weights are here; the page's script sets
    the image size to 224 when one is picked (data attributes)."""
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
