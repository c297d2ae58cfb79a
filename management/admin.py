"""The admin is the UI: datasets, their images, training runs, zip upload, Train and Test."""

import json

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_POST

from datasets import deletions
from datasets import views as dataset_views
from datasets.models import DataSet, DataSetItem, LabelCount
from datasets.services import (
    dataset_delete,
    dataset_item_save,
    dataset_items_delete,
    dataset_label_counts,
    dataset_labels,
    datasets_with_counts,
)
from health import views as health_views
from labelling import views as labelling_views
from labelling.services import (
    RETRAIN_AFTER,
    dataset_labelled_since_current,
    dataset_suggestions_score,
    items_judged_by_suggestion,
)
from management import options
from management import permissions as rules
from management.errors import ServiceError
from management.forms import DataSetForm, DataSetItemForm
from ml.export import FORMATS, RUNTIMES
from serving import views as serving_views
from serving.exports import export_jobs_of
from serving.models import ExportJob
from training import run_report
from training import views as training_views
from training.evaluations import evaluation_has_predictions
from training.models import TrainingRun
from training.services import (
    training_run_cancel,
    training_run_create,
    training_run_delete,
    training_run_resume,
)

GALLERY_PAGE = 24
RUNS_ON_DATASET_PAGE = 5
MISTAKES_ON_RUN_PAGE = 24
LOG_TAIL_LINES = 200


def guarded(model_admin, view, rule: rules.Rule | None = None):
    """An admin page: logged-in staff only, and allowed by the use case's `rule` when given."""

    def page(request, *args, **kwargs):
        if rule is not None and not rule.allows(request.user):
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return model_admin.admin_site.admin_view(page)


def progress_bar(run: TrainingRun | None) -> str:
    if run is None:
        return "—"
    return render_to_string("management/progress.html", {"run": run})


thumbnail = dataset_views.item_thumbnail


# The latest zip imports the dataset page lists (each links to its page with the whole report).
IMPORTS_ON_DATASET_PAGE = 3


@admin.register(DataSet)
class DataSetAdmin(admin.ModelAdmin):
    form = DataSetForm
    change_form_template = "management/dataset_change_form.html"
    change_list_template = "management/dataset_change_list.html"
    # Accuracy beside the name: on a phone the columns after the first few are off-screen (and the
    # labels and the date are hidden there, see kerasui.css).
    list_display = ["name", "current_accuracy", "item_count", "training", "labels", "updated_at"]
    search_fields = ["name"]
    actions = ["train_selected"]
    readonly_fields = ["label_counts", "thumbnails", "runs", "current_run_link"]
    # The model and the images are the page's own sections above these (dataset_change_form.html):
    # what a user does first comes first, the options last.
    fieldsets = [
        (None, {"fields": ["name"]}),
        *options.fieldsets(options.MODEL, options.TRAINING, options.AUGMENTATION, options.ANSWERS),
    ]

    def get_queryset(self, request):
        return datasets_with_counts(super().get_queryset(request))

    def changelist_view(self, request, extra_context=None):
        # The list refreshes itself while something trains, so progress moves without a click.
        active = TrainingRun.objects.filter(status__in=TrainingRun.ACTIVE).exists()
        return super().changelist_view(request, {**(extra_context or {}), "has_active_runs": active})

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        # The page shows the buttons of the use cases this user may do.
        context = {**(extra_context or {}), "can": rules.allowed(request.user)}
        dataset = self.get_object(request, object_id) if object_id else None
        if dataset is not None:
            context |= self._sections(dataset)
        return super().changeform_view(request, object_id, form_url, context)

    def _sections(self, dataset: DataSet) -> dict:
        """The page's sections above the options: the current model and its last runs, then the images."""
        runs = list(dataset.runs.defer(*TrainingRun.HEAVY_FIELDS).order_by("-created_at", "-id")[:RUNS_ON_DATASET_PAGE])
        labelled_since = dataset_labelled_since_current(dataset=dataset)
        offer = bool(labelled_since and labelled_since >= RETRAIN_AFTER)
        return {
            "current_run": dataset.current_run,
            "latest_run": runs[0] if runs else None,
            "runs_count": dataset.runs.count(),
            "runs_table": self.runs(dataset, runs),
            "label_counts_html": self.label_counts(dataset),
            "gallery_html": self.thumbnails(dataset),
            "imports": list(dataset.import_jobs.order_by("-created_at", "-id")[:IMPORTS_ON_DATASET_PAGE]),
            "camera_labels": dataset_labels(dataset=dataset),
            "labelled_since": labelled_since,
            "retrain_after": RETRAIN_AFTER,
            # Only where the page offers to train again: how the current model fared on those new labels.
            "suggestions_score": dataset_suggestions_score(dataset=dataset) if offer else None,
        }

    def get_readonly_fields(self, request, obj=None):
        # The model code runs on the server: only holders of the model-code permission may edit it.
        fields = list(super().get_readonly_fields(request, obj))
        if not rules.SET_MODEL_CODE.allows(request.user):
            fields.append("process")
        return fields

    @admin.display(description="images", ordering="item_count")
    def item_count(self, obj):
        return obj.item_count

    @admin.display(description="labels")
    def labels(self, obj):
        counts = dataset_label_counts(dataset=obj)
        return ", ".join(f"{label} ({count})" for label, count in counts.items()) or "—"

    @admin.display(description="training")
    def training(self, obj):
        return format_html("{}", progress_bar(obj.latest_run))

    @admin.display(description="accuracy")
    def current_accuracy(self, obj):
        return obj.current_run.accuracy_percent if obj.current_run else "—"

    @admin.display(description="images per label")
    def label_counts(self, obj):
        counts = dataset_label_counts(dataset=obj)
        total, most = sum(counts.values()), max(counts.values(), default=0)
        bars = [
            (label, count, round(100 * count / total, 1), round(100 * count / most)) for label, count in counts.items()
        ]
        context = {"counts": counts, "bars": bars, "dataset": obj}
        return format_html("{}", render_to_string("management/label_counts.html", context))

    @admin.display(description="thumbnails")
    def thumbnails(self, obj):
        # The newest first, as the gallery's script shows them: what was just added is in view.
        labels = list(dataset_label_counts(dataset=obj))
        items = list(obj.items.order_by("-id")[:GALLERY_PAGE])
        total = getattr(obj, "item_count", None)
        if total is None:
            total = sum(dataset_label_counts(dataset=obj).values())
        list_url = reverse("admin:management_datasetitem_changelist") + f"?dataset__id__exact={obj.pk}"
        return format_html(
            "{}",
            render_to_string(
                "management/thumbnails.html",
                {
                    "items": [(item, thumbnail(item, 64)) for item in items],
                    "total": total,
                    "list_url": list_url,
                    "dataset": obj,
                    "labels_json": json.dumps(labels),
                },
            ),
        )

    @admin.display(description="runs")
    def runs(self, obj, runs=None):
        runs = obj.runs.defer(*TrainingRun.HEAVY_FIELDS)[:20] if runs is None else runs
        context = {"runs": runs, "current_run_id": obj.current_run_id}
        return format_html("{}", render_to_string("management/run_table.html", context))

    @admin.display(description="current model")
    def current_run_link(self, obj):
        return training_views.run_link(obj.current_run)

    @admin.action(description="Train selected datasets", permissions=["train"])
    def train_selected(self, request, queryset):
        for dataset in queryset:
            self._train(request, dataset)

    def has_train_permission(self, request) -> bool:
        return rules.TRAIN.allows(request.user)

    def _train(self, request, dataset):
        try:
            run = training_run_create(dataset=dataset, user=request.user)
        except ServiceError as error:
            self.message_user(request, error.message, messages.ERROR)
            return None
        self.message_user(
            request,
            format_html("Training of '{}' queued as {}.", dataset.name, training_views.run_link(run)),
            messages.SUCCESS,
        )
        return run

    def has_delete_permission(self, request, obj=None):
        # A dataset being trained keeps its delete button hidden until its run is cancelled or ends.
        if obj is not None and obj.runs.filter(status__in=TrainingRun.ACTIVE).exists():
            return False
        return super().has_delete_permission(request, obj)

    # The confirmation says in words what goes (not one line per image), and that it cannot be undone.
    delete_confirmation_template = "management/delete_confirmation.html"
    delete_selected_confirmation_template = "management/delete_selected_confirmation.html"

    def delete_view(self, request, object_id, extra_context=None):
        # A dataset being trained: say why it cannot go now, on its page, instead of a bare 403.
        object_id = unquote(object_id)
        active = None
        if object_id.isdigit():
            active = TrainingRun.objects.filter(dataset_id=object_id, status__in=TrainingRun.ACTIVE).first()
        if active is not None and super().has_delete_permission(request):
            self.message_user(
                request,
                f"{active} is {active.status}: cancel it (or let it end) before deleting the dataset.",
                messages.ERROR,
            )
            return redirect("admin:management_dataset_change", active.dataset_id)
        return super().delete_view(request, object_id, extra_context)

    def get_deleted_objects(self, objs, request):
        deleted, counts, needed, protected = deletions.deleted_objects(objs, request, deletions.dataset_losses)
        for model in (DataSetItem, TrainingRun):
            if not request.user.has_perm(f"management.delete_{model._meta.model_name}"):
                needed.add(str(model._meta.verbose_name_plural))
        return deleted, counts, needed, protected

    def response_change(self, request, obj):
        # "Save and train" (the Train button while the options have unsaved edits): train what was on screen.
        if "_train" in request.POST and rules.TRAIN.allows(request.user):
            self.message_user(request, format_html("Saved the changes to '{}'.", obj.name), messages.SUCCESS)
            run = self._train(request, obj)
            if run is not None:
                return redirect("admin:management_trainingrun_change", run.pk)
            return redirect("admin:management_dataset_change", obj.pk)
        return super().response_change(request, obj)

    def delete_model(self, request, obj):
        # Constant work: the dataset is marked (gone from every page at once) and a job deletes the rest.
        try:
            request.dataset_deletion = dataset_delete(dataset=obj, user=request.user)
        except ServiceError as error:
            self.message_user(request, error.message, messages.ERROR)

    def response_delete(self, request, obj_display, obj_id):
        job = getattr(request, "dataset_deletion", None)
        if job is not None:
            self.message_user(request, self._deletion_message([job]), messages.SUCCESS)
        return redirect("admin:management_dataset_changelist")

    def delete_queryset(self, request, queryset):
        jobs = []
        for dataset in queryset:
            try:
                jobs.append(dataset_delete(dataset=dataset, user=request.user))
            except ServiceError as error:
                self.message_user(request, error.message, messages.ERROR)
        if jobs:
            self.message_user(request, self._deletion_message(jobs), messages.SUCCESS)
        # Django's bulk action adds "Successfully deleted N data sets" next: the message above (and any
        # refusal) already says what happened, and N would count the refused ones too.
        request.kerasui_deletions_said = True

    def message_user(self, request, message, level=messages.INFO, *args, **kwargs):
        if getattr(request, "kerasui_deletions_said", False) and level == messages.SUCCESS:
            request.kerasui_deletions_said = False
            return
        super().message_user(request, message, level, *args, **kwargs)

    @staticmethod
    def _deletion_message(jobs) -> str:
        one = len(jobs) == 1
        names = ", ".join(f"'{job.dataset_name}'" for job in jobs)
        images = sum(job.images for job in jobs)
        job_numbers = f"deletion job{'' if one else 's'} {', '.join(str(job.pk) for job in jobs)}"
        gone = f"{names} {'is' if one else 'are'} gone from every list now, and {'its name' if one else 'their names'} "
        if not images:
            return f"{gone}can be used again ({job_numbers})."
        return (
            f"{gone}can be used again; {images} image{'' if images == 1 else 's'} with their files "
            f"{'is' if images == 1 else 'are'} deleted in the background ({job_numbers})."
        )

    def get_urls(self):
        upload = guarded(self, dataset_views.upload_zip, rules.ADD_IMAGES)
        return [
            path("upload/", upload, name="management_dataset_upload"),
            path("<int:dataset_id>/upload/", upload, name="management_dataset_upload_into"),
            path(
                "import/<int:job_id>/",
                guarded(self, dataset_views.import_progress, rules.ADD_IMAGES),
                name="management_dataset_import",
            ),
            path(
                "<int:dataset_id>/train/",
                guarded(self, require_POST(self._train_view), rules.TRAIN),
                name="management_dataset_train",
            ),
            path(
                "<int:dataset_id>/validate/",
                guarded(self, training_views.validate_model, rules.EDIT_DATASET),
                name="management_dataset_validate",
            ),
            path(
                "<int:dataset_id>/import_model/",
                guarded(self, training_views.import_model, rules.IMPORT),
                name="management_dataset_import_model",
            ),
            *self._health_urls(),
            path(
                "<int:dataset_id>/label/",
                guarded(self, labelling_views.label_page, rules.VIEW_IMAGES),
                name="management_dataset_label",
            ),
            path(
                "<int:dataset_id>/label/set/",
                guarded(self, labelling_views.label_set, rules.LABEL_IMAGES),
                name="management_dataset_label_set",
            ),
            path("test/", guarded(self, serving_views.test_model, rules.PREDICT), name="management_dataset_test"),
            path("demo/", guarded(self, dataset_views.load_demo, rules.LOAD_DEMO), name="management_dataset_demo"),
            *super().get_urls(),
        ]

    def _health_urls(self):
        """Dataset → Health (health/views.py): the page, and each action behind its rule."""
        pages = [
            ("", health_views.health_page, rules.VIEW_HEALTH, ""),
            ("check/", health_views.health_start, rules.CHECK_HEALTH, "_check"),
            ("cancel/", health_views.health_cancel, rules.CHECK_HEALTH, "_cancel"),
            ("relabel/", health_views.health_relabel, rules.RELABEL, "_relabel"),
            ("keep/", health_views.health_keep, rules.RELABEL, "_keep"),
            ("delete/", health_views.health_delete, rules.DELETE_IMAGES, "_delete"),
            ("keep_one/", health_views.health_keep_one, rules.DELETE_IMAGES, "_keep_one"),
        ]
        return [
            path(f"<int:dataset_id>/health/{url}", guarded(self, view, rule), name=f"management_dataset_health{name}")
            for url, view, rule, name in pages
        ]

    def _train_view(self, request, dataset_id):
        dataset = get_object_or_404(DataSet, pk=dataset_id)
        run = self._train(request, dataset)
        if run is None:
            return redirect("admin:management_dataset_change", dataset.pk)
        return redirect("admin:management_trainingrun_change", run.pk)


UNLABELLED_CHOICE = "__unlabelled__"  # the filter's value for the empty label (an empty value means "all")


class LabelFilter(admin.SimpleListFilter):
    """By label: the labels come from the counts kept as data, not from a scan of every image."""

    title = "label"
    parameter_name = "label"

    def lookups(self, request, model_admin):
        labels = LabelCount.objects.filter(count__gt=0)
        dataset_id = request.GET.get("dataset__id__exact")
        if dataset_id and dataset_id.isdigit():
            labels = labels.filter(dataset_id=dataset_id)
        names = labels.order_by("label").values_list("label", flat=True).distinct()
        return [(name or UNLABELLED_CHOICE, name or "(unlabelled)") for name in names]

    def queryset(self, request, queryset):
        if self.value() == UNLABELLED_CHOICE:
            return queryset.filter(label="")
        return queryset.filter(label=self.value()) if self.value() else queryset


class SuggestionFilter(admin.SimpleListFilter):
    """Images labelled since the current model suggested theirs: where it was right, or wrong."""

    title = "the current model's suggestion"
    parameter_name = "suggestion"

    def lookups(self, request, model_admin):
        return [("wrong", "wrong (labelled otherwise)"), ("right", "right")]

    def queryset(self, request, queryset):
        if self.value() not in {"wrong", "right"}:
            return queryset
        return items_judged_by_suggestion(items=queryset, right=self.value() == "right")


@admin.register(DataSetItem)
class DataSetItemAdmin(admin.ModelAdmin):
    form = DataSetItemForm
    list_display = ["preview", "label", "suggested", "dataset", "created_at"]
    list_display_links = ["preview", "label"]
    list_select_related = ["dataset", "suggestion"]
    list_filter = ["dataset", LabelFilter, SuggestionFilter]
    search_fields = ["label"]
    list_per_page = 60
    # Newest first, by the primary key: the model's own ordering sorts by the dataset's name, which at
    # 60,000 images makes the database sort every image for each page (1.3 s for page 500).
    ordering = ["-id"]
    # "N of M in all" would count every image on each page of a filtered list.
    show_full_result_count = False
    readonly_fields = ["large_preview", "original_name"]
    fields = ["dataset", "label", "image", "original_name", "large_preview"]

    @admin.display(description="image")
    def preview(self, obj):
        return thumbnail(obj, 48)

    def get_queryset(self, request):
        # The images of a dataset being deleted go from the list with it, before its job deletes them.
        return super().get_queryset(request).filter(dataset__deleting=False)

    @admin.display(description="model suggested")
    def suggested(self, obj):
        suggestion = getattr(obj, "suggestion", None)
        return f"{suggestion.label} ({suggestion.confidence:.0%})" if suggestion else "—"

    @admin.display(description="preview")
    def large_preview(self, obj):
        if not (obj.pk and obj.image):
            return "—"
        # The original only when asked for: a click opens it.
        return format_html(
            '<a href="{}" target="_blank" rel="noopener" title="open the original">{}</a>',
            obj.image.url,
            thumbnail(obj, 192),
        )

    def save_model(self, request, obj, form, change):
        dataset_item_save(item=obj)

    delete_confirmation_template = "management/delete_confirmation.html"
    delete_selected_confirmation_template = "management/delete_selected_confirmation.html"

    def get_deleted_objects(self, objs, request):
        return deletions.deleted_objects(objs, request, deletions.item_losses)

    def delete_model(self, request, obj):
        dataset_items_delete(items=[obj])

    def delete_queryset(self, request, queryset):
        dataset_items_delete(items=queryset)


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    change_form_template = "management/run_change_form.html"
    list_display = [
        "__str__",
        "accuracy_display",  # before the progress bar: still on screen on a phone
        "progress_display",
        "epoch_display",
        "worker",
        "created_at",
        "duration",
    ]
    list_filter = ["status", "dataset"]
    list_select_related = ["dataset"]
    actions = ["cancel_selected", "compare_selected"]
    fieldsets = [
        # Status, phase, progress, epochs and a failure's reason are the headline (run_headline.html): shown once.
        (None, {"fields": ["dataset"]}),
        (
            "Results",
            {"fields": ["promotion_display", "metrics_display", "history_display", "serving_display", "downloads"]},
        ),
        ("Evaluation", {"fields": ["evaluation_display"]}),
        ("Log", {"fields": ["log_tail"]}),
        (
            "Snapshot taken when the run was created",
            {
                "classes": ["collapse"],
                "fields": ["labels", *options.RUN_SNAPSHOT_FIELDS, "split_counts"],
            },
        ),
        (
            "Times",
            {
                "fields": [
                    "worker",
                    "heartbeat_at",
                    "created_by",
                    "created_at",
                    "started_at",
                    "finished_at",
                    "duration",
                ]
            },
        ),
    ]

    def get_readonly_fields(self, request, obj=None):
        return [field for fieldset in self.fieldsets for field in fieldset[1]["fields"]]

    def get_queryset(self, request):
        # The list never reads a run's per-image data; one run's page loads it when it shows it.
        return super().get_queryset(request).filter(dataset__deleting=False).defer(*TrainingRun.HEAVY_FIELDS)

    def get_fieldsets(self, request, obj=None):
        """A finished run shows only what it has: a failed run no empty Results, Evaluation or Log."""
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or obj.is_active:
            return fieldsets  # the page fills them in when the run ends
        nothing = {
            "promotion_display": not obj.promotion,
            "metrics_display": not obj.metrics,
            "history_display": not obj.history,
            "serving_display": not obj.is_version,
            "downloads": not obj.is_version and not obj.log_file,
            "evaluation_display": not obj.evaluation,
            "log_tail": not obj.log_file,
        }
        kept = []
        for name, spec in fieldsets:
            fields = [field for field in spec["fields"] if not nothing.get(field, False)]
            if fields:
                kept.append((name, {**spec, "fields": fields}))
        return kept

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        # A queued or running run is cancelled first; deleting it under a training process is refused.
        return super().has_delete_permission(request, obj) and not (obj is not None and obj.is_active)

    delete_confirmation_template = "management/delete_confirmation.html"
    delete_selected_confirmation_template = "management/delete_selected_confirmation.html"

    def get_deleted_objects(self, objs, request):
        return deletions.deleted_objects(objs, request, deletions.run_losses)

    def delete_model(self, request, obj):
        training_run_delete(run=obj)

    def delete_queryset(self, request, queryset):
        for run in queryset:
            if run.is_active:
                self.message_user(request, f"{run} is {run.status}: cancel it first.", messages.ERROR)
            else:
                training_run_delete(run=run)

    def has_change_permission(self, request, obj=None):
        # Runs are records: nothing in them is edited by hand. Viewing stays allowed.
        return False

    @admin.display(description="progress", ordering="progress")
    def progress_display(self, obj):
        return format_html("{}", progress_bar(obj))

    @admin.display(description="epoch")
    def epoch_display(self, obj):
        return f"{obj.epoch} / {obj.epochs}"

    @admin.display(description="accuracy")
    def accuracy_display(self, obj):
        return obj.accuracy_percent

    @admin.display(description="duration")
    def duration(self, obj):
        return run_report.duration_text(obj.duration_seconds)

    @admin.display(description="final metrics")
    def metrics_display(self, obj):
        rows = run_report.metric_rows(obj.metrics)
        return format_html("{}", render_to_string("management/metrics.html", {"rows": rows}))

    @admin.display(description="history")
    def history_display(self, obj):
        table = run_report.history_table(obj.history, run_report.best_epoch(obj))
        return format_html("{}", render_to_string("management/history.html", table))

    @admin.display(description="images per split")
    def split_counts(self, obj):
        return ", ".join(f"{name} {count}" for name, count in obj.split_counts.items()) or "—"

    @admin.display(description="on the held-out images")
    def evaluation_display(self, obj):
        if not obj.evaluation:
            return "—"
        titles = {
            "validation": "Validation images",
            "test": "Test images (never used for training or choosing the epoch)",
            "training": "Training images (nothing was held out)",
        }
        parts = []
        for name, report in obj.evaluation.items():
            if not report.get("count"):
                continue
            rows = list(zip(report["labels"], report["confusion_matrix"], strict=True))
            # The most confident mistakes first; the rest are a click away (each cell of the matrix lists its images).
            shown = report["misclassified"][:MISTAKES_ON_RUN_PAGE]
            wrong_ids = [entry["item"] for entry in shown]
            items = {item.pk: item for item in DataSetItem.objects.filter(pk__in=wrong_ids)}
            mistakes = [
                (entry, items.get(entry["item"]), thumbnail(items[entry["item"]], 64) if entry["item"] in items else "")
                for entry in shown
            ]
            context = {"title": titles.get(name, name), "report": report, "rows": rows, "mistakes": mistakes}
            # Cells link to their images when the evaluation kept every prediction; a mistake shows its heatmap.
            context |= {"run": obj, "split": name, "cell_links": evaluation_has_predictions(report=report)}
            parts.append(render_to_string("management/evaluation.html", context))
        return format_html("{}", mark_safe("".join(parts)))  # noqa: S308 - rendered by templates with escaping

    @admin.display(description="current model")
    def promotion_display(self, obj):
        reason = (obj.promotion or {}).get("reason", "")
        if obj.is_current:
            return format_html("<strong>✔ current</strong> {}", f"— {reason}" if reason else "")
        if not obj.is_version:
            return "—"
        if (obj.promotion or {}).get("promoted"):
            # It was current once and a newer run (or a person) replaced it: said in the past tense.
            current = obj.dataset.current_run_id
            now = f"run {current} answers predictions now" if current else "the dataset has no current model now"
            return format_html(
                '<span class="kerasui-promotion">Not current any more: {}. It was current because: {}.</span>'
                '<br><span class="kerasui-muted">{}</span>',
                now,
                reason,
                "Promote it (above) to make it answer predictions again.",
            )
        return format_html(
            '<span class="kerasui-promotion">{}</span><br><span class="kerasui-muted">{}</span>',
            reason or "a version, not current",
            "Promote it (above) to make it answer predictions anyway.",
        )

    @admin.display(description="served by")
    def serving_display(self, obj):
        if not obj.is_version:
            return "—"
        if not obj.serving_engine:
            return "decided when the model is first used (its ONNX export is made and checked then)"
        return format_html("<strong>{}</strong><br>{}", obj.get_serving_engine_display(), obj.serving_note)

    @admin.display(description="downloads")
    def downloads(self, obj):
        rows = [
            {"format": format, "precision": "float32", "title": format, "runtime": RUNTIMES[format]}
            for format in FORMATS
        ]
        rows.append({"format": "tflite", "precision": "float16", "title": "tflite float16", "runtime": "TFLite"})
        jobs = {}
        for job in export_jobs_of(run=obj):  # newest first: each format's latest job
            jobs.setdefault((job.format, job.precision), job)
        for row in rows:
            key = row["format"] if row["precision"] == "float32" else f"{row['format']}_{row['precision']}"
            row["record"] = obj.exports.get(key)
            row["job"] = jobs.get((row["format"], row["precision"]))
        return format_html("{}", render_to_string("management/run_downloads.html", {"run": obj, "exports": rows}))

    @admin.display(description="last lines of the log")
    def log_tail(self, obj):
        if not obj.log_file:
            return "—"
        try:
            with obj.log_file.open("rb") as file:
                lines = file.read().decode("utf-8", "replace").splitlines()[-LOG_TAIL_LINES:]
        except OSError:
            return "(the log file is missing)"
        return format_html('<pre class="kerasui-log">{}</pre>', "\n".join(lines))

    @admin.action(description="Cancel selected runs", permissions=["train"])
    def cancel_selected(self, request, queryset):
        cancelled = sum(training_run_cancel(run=run) for run in queryset)
        self.message_user(request, f"Cancelled {cancelled} run{'' if cancelled == 1 else 's'}.", messages.SUCCESS)

    @admin.action(description="Compare selected runs", permissions=["compare"])
    def compare_selected(self, request, queryset):
        ids = ",".join(str(pk) for pk in queryset.order_by("id").values_list("pk", flat=True))
        return redirect(reverse("admin:management_trainingrun_compare") + f"?ids={ids}")

    def has_compare_permission(self, request) -> bool:
        return rules.COMPARE.allows(request.user)

    def has_train_permission(self, request) -> bool:
        # Cancelling changes what happens to a dataset: the use case of training.
        return rules.TRAIN.allows(request.user)

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        context = {**(extra_context or {}), "can": rules.allowed(request.user)}
        run = self.get_object(request, unquote(object_id)) if object_id else None
        if run is not None:
            context["headline"] = run_report.run_headline(run)
            # The page reloads itself while an export of the run is being made, so its progress moves.
            context["exporting"] = run.export_jobs.filter(status__in=ExportJob.ACTIVE).exists()
        return super().changeform_view(request, object_id, form_url, context)

    def get_urls(self):
        name = "management_trainingrun"
        return [
            path("compare/", guarded(self, training_views.compare_runs, rules.COMPARE), name=f"{name}_compare"),
            path(
                "<int:run_id>/model/", guarded(self, training_views.download_model, rules.EXPORT), name=f"{name}_model"
            ),
            path("<int:run_id>/log/", guarded(self, training_views.download_log, rules.EXPORT), name=f"{name}_log"),
            path(
                "<int:run_id>/export/<str:format>/",
                guarded(self, serving_views.download_export, rules.EXPORT),
                name="management_trainingrun_export",
            ),
            path(
                "<int:run_id>/explain/<int:item_id>.png",
                guarded(self, serving_views.explain_run_item, rules.INSPECT_RUN),
                name="management_trainingrun_explain",
            ),
            path(
                "<int:run_id>/confusion/<str:split>/<int:true_index>/<int:predicted_index>/",
                guarded(self, training_views.confusion_cell, rules.INSPECT_RUN),
                name="management_trainingrun_confusion",
            ),
            path(
                "<int:run_id>/promote/",
                guarded(self, training_views.promote_run, rules.PROMOTE),
                name="management_trainingrun_promote",
            ),
            path(
                "<int:run_id>/cancel/",
                guarded(self, require_POST(self._cancel), rules.TRAIN),
                name="management_trainingrun_cancel",
            ),
            path(
                "<int:run_id>/resume/",
                guarded(self, require_POST(self._resume), rules.TRAIN),
                name="management_trainingrun_resume",
            ),
            *super().get_urls(),
        ]

    def _cancel(self, request, run_id):
        run = get_object_or_404(TrainingRun, pk=run_id)
        if training_run_cancel(run=run):
            self.message_user(request, f"{run} was cancelled.", messages.SUCCESS)
        return redirect("admin:management_trainingrun_change", run.pk)

    def _resume(self, request, run_id):
        run = get_object_or_404(TrainingRun, pk=run_id)
        try:
            training_run_resume(run=run)
        except ServiceError as error:
            self.message_user(request, error.message, messages.ERROR)
        else:
            self.message_user(request, f"{run} was queued again; it continues after epoch {len(run.history)}.")
        return redirect("admin:management_trainingrun_change", run.pk)
