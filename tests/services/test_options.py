"""Training options are declared once (management/options.py) and every reader follows the declaration."""

import dataclasses

from datasets.models import DataSet
from datasets.serializers import DataSetSerializer
from management import options
from management.admin import DataSetAdmin, TrainingRunAdmin
from ml.fit import FitOptions
from training.models import TrainingRun
from training.serializers import TrainingRunSerializer
from training.services import training_run_create

# A value other than the default for each option, as a person would set it.
CHANGED = {
    "architecture": "deep_cnn",
    "process": "model.add(layers.Flatten())\n",
    "epochs": 7,
    "batch_size": 5,
    "image_size": 24,
    "color_mode": "grayscale",
    "learning_rate": 0.01,
    "validation_split": 0.3,
    "test_split": 0.1,
    "seed": 1234,
    "early_stopping_patience": 2,
    "reduce_lr_on_plateau": True,
    "balance_classes": True,
    "verbose": 0,
    "augment_flip": "horizontal",
    "augment_rotation": 0.1,
    "augment_zoom": 0.2,
    "augment_contrast": 0.3,
    "fine_tune_seconds": 30,
    "promotion_policy": "always",
    "auto_seconds": 60,
    "unknown_below": 0.7,
}


def test_every_declared_option_is_a_field_of_the_dataset_and_its_snapshot_one_of_the_run():
    assert set(CHANGED) | {"weights_file"} == {option.name for option in options.OPTIONS}
    dataset_fields = {field.name for field in DataSet._meta.get_fields()}
    run_fields = {field.name for field in TrainingRun._meta.get_fields()}
    for option in options.OPTIONS:
        assert option.name in dataset_fields
        # Augmentations go into the run's `augmentation`; the unknown threshold stays the dataset's.
        assert (option.name in run_fields) is (option.snapshot_field() is not None), option.name


def test_a_run_copies_every_option_of_its_dataset(db):
    dataset = DataSet.objects.create(name="Everything changed", **CHANGED)
    run = training_run_create(dataset=dataset, enqueue=False)
    for option in options.OPTIONS:
        if option.augmentation:
            assert run.augmentation[option.augmentation] == CHANGED[option.name]
        elif option.name in CHANGED and option.snapshot_field() is not None:
            assert getattr(run, option.name) == CHANGED[option.name], option.name
    assert run.weights_file == "" and run.labels == []


def test_the_fit_options_are_read_from_the_declaration(db):
    dataset = DataSet.objects.create(name="Fit", **CHANGED)
    run = training_run_create(dataset=dataset, enqueue=False)
    arguments = options.fit_arguments(run)
    assert set(arguments) <= {field.name for field in dataclasses.fields(FitOptions)}
    fit = FitOptions(**arguments)
    assert (fit.epochs, fit.patience, fit.balance_classes, fit.seed) == (7, 2, True, 1234)


def test_the_serializers_and_the_admin_show_every_option():
    assert set(options.DATASET_FIELDS) <= set(DataSetSerializer.Meta.fields)
    assert set(options.RUN_FIELDS) <= set(TrainingRunSerializer.Meta.fields)
    shown = {name for _, fieldset in DataSetAdmin.fieldsets for name in fieldset["fields"]}
    assert set(options.DATASET_FIELDS) <= shown
    snapshot = {name for _, fieldset in TrainingRunAdmin.fieldsets for name in fieldset["fields"]}
    assert set(options.RUN_SNAPSHOT_FIELDS) <= snapshot


def test_a_blank_seed_is_the_datasets_own_so_every_run_holds_out_the_same_images(db):
    dataset = DataSet.objects.create(name="Blank seed")
    assert dataset.seed is None

    assert options.snapshot_of(dataset)["seed"] == dataset.pk
    assert options.snapshot_of(dataset)["seed"] == options.snapshot_of(DataSet.objects.get(pk=dataset.pk))["seed"]
