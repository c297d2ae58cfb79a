"""Training runs: one training of a dataset, a snapshot of its options, its progress and its results.

A model of the Django app "management" (app_label; imported in management/models.py, which adds the
options' snapshot fields). A run is a job of kind "training" (jobs/).
"""

from django.db import models
from django.utils.text import slugify

from jobs.models import Job


class Phase(models.TextChoices):
    PREPARING = "preparing", "Preparing images"
    BUILDING = "building", "Building the model"
    TRAINING = "training", "Training"
    # Pretrained starting points: their recipe's phases (ml/transfer.py).
    FEATURES = "features", "Computing the backbone's features"
    HEAD = "head", "Training the head"
    FINE_TUNE = "fine_tune", "Fine-tuning the backbone"
    EVALUATING = "evaluating", "Evaluating"
    SAVING = "saving", "Saving the model"
    EXPORTING = "exporting", "Exporting to ONNX and proving the export"


class ServingEngine(models.TextChoices):
    """What answers a version's predictions in the web process."""

    PENDING = "", "Not decided yet (decided when first used)"
    ONNXRUNTIME = "onnxruntime", "ONNX Runtime (its proven ONNX export)"
    KERAS = "keras", "Keras (fallback: TensorFlow in the web process)"


class TrainingRun(Job):
    """One training of a dataset (a job of kind "training"): a snapshot of its options, its progress and results."""

    KIND = "training"
    # The evaluation's summary (a few kB to tens of kB: per-label measures, the confusion matrix, the most
    # confident mistakes) is read by the run's own page and answer, never by a list or a join
    # (`TrainingRun.objects.defer(*TrainingRun.HEAVY_FIELDS)`). The per-image data (hundreds of kB at
    # 60,000 images: each split's item ids, each evaluated image's prediction) is a row of RunData.
    HEAVY_FIELDS = ("evaluation",)

    dataset = models.ForeignKey("management.DataSet", on_delete=models.CASCADE, related_name="runs")
    epoch = models.PositiveIntegerField(default=0)

    # The snapshot: what this run trains with, whatever happens to the dataset afterwards. The options'
    # fields are added from management/options.py (management/models.py adds them).
    labels = models.JSONField(default=list, help_text="The labels in model output order.")
    augmentation = models.JSONField(default=dict, blank=True)
    split_counts = models.JSONField(
        default=dict, blank=True, help_text="The number of images of each split (what lists show of `splits`)."
    )

    phase = models.CharField(max_length=10, choices=Phase.choices, blank=True)
    evaluation = models.JSONField(
        default=dict,
        blank=True,
        help_text="Each evaluated split's report without its per-image predictions (those are in RunData).",
    )
    checkpoint = models.CharField(
        max_length=255, blank=True, help_text="The last completed epoch's model and optimizer, for resuming."
    )
    interrupted = models.BooleanField(default=False, help_text="Its process stopped before the run finished.")
    unlabelled_count = models.PositiveIntegerField(
        default=0, help_text="The dataset's unlabelled images when the run was created: left out of it."
    )

    history = models.JSONField(default=list, blank=True)
    promotion = models.JSONField(
        default=dict,
        blank=True,
        help_text="Whether it became current when it finished, and why: the measure compared and both values.",
    )
    metrics = models.JSONField(default=dict, blank=True)
    model_file = models.FileField(upload_to="models", max_length=255, blank=True)
    log_file = models.FileField(upload_to="logs", max_length=255, blank=True)
    imported = models.BooleanField(default=False, help_text="Its model was uploaded, not trained here.")
    exports = models.JSONField(
        default=dict,
        blank=True,
        help_text="Each export made of the model, by format: its file, size, time and largest difference "
        "from the Keras model, or why it was refused.",
    )
    serving_engine = models.CharField(
        max_length=20,
        choices=ServingEngine.choices,
        default=ServingEngine.PENDING,
        blank=True,
        help_text="What answers this version's predictions in the web process.",
    )
    serving_note = models.TextField(blank=True, help_text="Why that engine: its proof, or why the fallback.")

    class Meta(Job.Meta):
        app_label = "management"
        verbose_name = "training run"

    def __str__(self) -> str:
        return f"Run {self.pk} of {self.dataset}"

    @property
    def accuracy(self) -> float | None:
        value = self.metrics.get("val_accuracy", self.metrics.get("accuracy"))
        return float(value) if value is not None else None

    @property
    def download_name(self) -> str:
        """The file name a downloaded model gets: the dataset's name and the run."""
        return f"{slugify(self.dataset.name) or 'model'}-run{self.pk}.keras"

    @property
    def is_version(self) -> bool:
        """A succeeded run with a model: a version of its dataset's model."""
        return self.status == self.Status.SUCCEEDED and bool(self.model_file)

    @property
    def is_current(self) -> bool:
        return self.dataset.current_run_id == self.pk

    @property
    def resumable(self) -> bool:
        """Cancelled or interrupted with a checkpoint of an epoch before the last."""
        ended = self.status == self.Status.CANCELLED or (self.status == self.Status.FAILED and self.interrupted)
        return ended and bool(self.checkpoint) and len(self.history) < self.epochs

    @property
    def accuracy_percent(self) -> str:
        return f"{self.accuracy:.1%}" if self.accuracy is not None else "—"

    @property
    def splits(self) -> dict[str, list[int]]:
        """The item ids of each split (train, validation, test): read from RunData when asked."""
        data = self._per_image()
        return data.splits if data is not None else {}

    @property
    def predictions(self) -> dict[str, list[list]]:
        """Each evaluated split's `[item, predicted label index, confidence]` rows: read from RunData when asked."""
        data = self._per_image()
        return data.predictions if data is not None else {}

    def _per_image(self) -> "RunData | None":
        try:
            return self.per_image  # one query, then kept on this instance (None too)
        except RunData.DoesNotExist:
            return None


class RunData(models.Model):
    """A run's per-image data, in a table of its own so that no list, join or admin queryset of runs reads
    it: read only by what shows it (the run's own API answer, a confusion cell, a comparison, a promotion)."""

    run = models.OneToOneField(TrainingRun, on_delete=models.CASCADE, primary_key=True, related_name="per_image")
    splits = models.JSONField(
        default=dict, blank=True, help_text="The item ids of each split: train, validation, test."
    )
    predictions = models.JSONField(
        default=dict,
        blank=True,
        help_text="Each evaluated split's predictions: [item, predicted label index, confidence] rows.",
    )

    class Meta:
        app_label = "management"
        verbose_name = "run's per-image data"
        verbose_name_plural = "runs' per-image data"

    def __str__(self) -> str:
        return f"Per-image data of run {self.run_id}"
