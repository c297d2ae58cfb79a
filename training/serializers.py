"""The API's serializers of training runs, starting points, model code validation, model import and a
confusion cell's images."""

from rest_framework import serializers

from management import options
from management.options import Architecture, ColorMode
from training.models import TrainingRun
from training.runs import evaluation_joined


class StartingPointSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="The value of a dataset's `architecture`.")
    label = serializers.CharField()
    pretrained = serializers.BooleanField(help_text="Starts from ImageNet weights and trains a new head.")
    weights_present = serializers.BooleanField(
        allow_null=True,
        help_text="Pretrained only: whether its weights are on this machine (else `python manage.py weights`).",
    )
    min_image_size = serializers.IntegerField()
    default_image_size = serializers.IntegerField(allow_null=True, help_text="What a pretrained network expects.")


class TrainingRunSerializer(serializers.ModelSerializer):
    progress = serializers.FloatField(source="percent", read_only=True, help_text="0 to 100.")
    accuracy = serializers.FloatField(read_only=True, allow_null=True)
    is_current = serializers.BooleanField(
        read_only=True, help_text="This version is the one its dataset predicts with (POST …/promote/ to change)."
    )
    resumable = serializers.BooleanField(read_only=True, help_text="Cancelled or interrupted: POST …/resume/.")

    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "dataset",
            "status",
            "phase",
            "progress",
            "epoch",
            *options.RUN_FIELDS,
            "augmentation",
            "labels",
            "split_counts",
            "unlabelled_count",
            "history",
            "metrics",
            "accuracy",
            "is_current",
            "promotion",
            "imported",
            "exports",
            "serving_engine",
            "serving_note",
            "error",
            "interrupted",
            "resumable",
            "worker",
            "heartbeat_at",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


class TrainingRunDetailSerializer(TrainingRunSerializer):
    """A run with its evaluation and the item ids of each of its splits (a list leaves them out)."""

    evaluation = serializers.SerializerMethodField(
        help_text="Each evaluated split's report, with every image's prediction ([item, label index, confidence])."
    )
    splits = serializers.JSONField(read_only=True, help_text="The item ids of each split: train, validation, test.")

    class Meta(TrainingRunSerializer.Meta):
        fields = [*TrainingRunSerializer.Meta.fields, "evaluation", "splits"]
        read_only_fields = fields

    def get_evaluation(self, run) -> dict:
        return evaluation_joined(run=run)


class ConfusionCellQuerySerializer(serializers.Serializer):
    """Which cell of a run's confusion matrix: the split and the two labels."""

    split = serializers.CharField(help_text="validation, test, or training (when nothing was held out).")
    true = serializers.CharField(help_text="The images' true label (the matrix's row).")
    predicted = serializers.CharField(help_text="The label the model gave them (the matrix's column).")


class CellImageSerializer(serializers.Serializer):
    item = serializers.IntegerField(source="item_id", help_text="The dataset item's id.")
    image = serializers.SerializerMethodField(help_text="The image's URL; null once the item is deleted.")
    label = serializers.SerializerMethodField(help_text="The item's label now (it may have been fixed since).")
    confidence = serializers.FloatField(help_text="The model's probability of the predicted label.")

    def get_image(self, cell_image) -> str | None:
        if cell_image.item is None:
            return None
        request = self.context.get("request")
        url = cell_image.item.image.url
        return request.build_absolute_uri(url) if request else url

    def get_label(self, cell_image) -> str | None:
        return cell_image.item.label if cell_image.item is not None else None


class ConfusionCellSerializer(serializers.Serializer):
    split = serializers.CharField()
    true = serializers.CharField(source="true_label")
    predicted = serializers.CharField(source="predicted_label")
    count = serializers.IntegerField(help_text="The cell's number in the confusion matrix.")
    images = CellImageSerializer(many=True, help_text="The images behind it, the most confident first.")


class ModelImportSerializer(serializers.Serializer):
    """A trained .keras model and its labels, as a new version of a dataset."""

    file = serializers.FileField(help_text="The model, saved with model.save('name.keras'); loaded in safe mode.")
    labels = serializers.CharField(
        help_text='The labels in the model\'s output order: a JSON list (["cat", "dog"]) or "cat,dog".'
    )


class ValidateModelSerializer(serializers.Serializer):
    """Options to validate instead of the saved ones; leave out to validate the dataset as saved."""

    process = serializers.CharField(required=False, trim_whitespace=False, allow_blank=True)
    architecture = serializers.ChoiceField(choices=Architecture.choices, required=False)
    image_size = serializers.IntegerField(required=False, min_value=8, max_value=1024)
    color_mode = serializers.ChoiceField(choices=ColorMode.choices, required=False)


class ValidationReportSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    summary = serializers.CharField(help_text="Keras' model summary.")
    layers = serializers.ListField(child=serializers.DictField(), help_text="name, type, output_shape, params")
    total_params = serializers.IntegerField()
    trainable_params = serializers.IntegerField()
    error = serializers.CharField(help_text="Why the model could not be built, empty when ok.")
    line = serializers.IntegerField(allow_null=True, help_text="The model code line that caused the error.")
    seconds = serializers.FloatField()
