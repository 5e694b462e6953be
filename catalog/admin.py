from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.http import HttpRequest
from django.utils.html import format_html

from catalog.access import BULK_APPLY_PERMISSION, BULK_RUN_PERMISSION
from catalog.models import (
    BulkJob,
    BulkJobError,
    BulkJobStatus,
    Category,
    CategoryDecision,
    CategorySuggestion,
    Listing,
    ListingImage,
    ModelVersion,
)
from catalog.selectors import bulk as bulk_selectors
from catalog.services.bulk.jobs import (
    BulkJobRefused,
    bulk_job_apply,
    bulk_job_cancel,
    bulk_job_resume,
    bulk_job_retry_failed,
    bulk_job_start,
)
from catalog.services.bulk.reports import bulk_job_summary


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "parent", "is_active"]
    list_filter = ["is_active", "parent"]
    search_fields = ["slug", "name"]


class ListingImageInline(admin.TabularInline):
    model = ListingImage
    extra = 0
    readonly_fields = ["checksum", "size_bytes", "status", "failure_reason", "deliveries"]


class ReadOnlyInline(admin.TabularInline):
    """An inline that shows rows and never adds, edits or deletes them: `fields` are read-only."""

    extra = 0
    can_delete = False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.fields or ()

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class CategoryDecisionInline(ReadOnlyInline):
    """The listing's audit trail, read-only: categories change through the review pages and the
    seller's pages, which record each decision (`listing_category_set`)."""

    model = CategoryDecision
    fields = [
        "created_at",
        "action",
        "source",
        "actor",
        "category",
        "model_version",
        "confidence",
        "threshold",
    ]


@admin.register(Listing)
class ListingAdmin(admin.ModelAdmin):
    list_display = [
        "title",
        "seller",
        "category",
        "category_source",
        "suggested_category",
        "suggested_confidence",
    ]
    list_filter = ["category_source", "category"]
    search_fields = ["title"]
    # The category is set only through services that audit it (review pages, seller pages).
    readonly_fields = [
        "category",
        "category_source",
        "suggested_category",
        "suggested_confidence",
        "suggested_top_k",
        "suggested_margin",
        "suggested_model_version",
    ]
    inlines = [ListingImageInline, CategoryDecisionInline]


@admin.register(ListingImage)
class ListingImageAdmin(admin.ModelAdmin):
    list_display = ["id", "listing", "status", "failure_reason", "deliveries", "status_changed_at"]
    list_filter = ["status"]


@admin.register(CategorySuggestion)
class CategorySuggestionAdmin(admin.ModelAdmin):
    list_display = ["image", "category", "confidence", "model_version", "updated_at"]
    list_filter = ["model_version", "category"]


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "backbone_version", "is_active", "created_at"]
    # Activation and rollback go through the registry pages (a comparison, a permission, a record).
    exclude = ["head_npz"]
    readonly_fields = [
        "name",
        "backbone_version",
        "is_active",
        "activated_at",
        "training_photos",
        "held_out_photos",
        "auto_accept_precision",
        "auto_accept_thresholds",
        "hyperparameters",
        "metrics",
        "head_manifest",
        "held_out_images",
    ]


# --- bulk reclassification ---------------------------------------------------------------------


# User-facing message; tests reuse it.
BULK_APPLY_NEEDS_PERMISSION = (
    "Only a dry run: writing suggestions for the catalogue needs the permission to apply bulk jobs."
)


class BulkJobStartForm(forms.ModelForm):
    """Start a job: version, optional category subtree, dry run first (the default). A job that is
    not a dry run writes suggestions, so it needs the apply permission (`can_apply`, set per
    request by the admin)."""

    can_apply = False

    class Meta:
        model = BulkJob
        fields = ["model_version", "category", "dry_run", "chunk_size"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["dry_run"].initial = True
        self.fields["chunk_size"].initial = settings.BULK_CHUNK_SIZE
        self.fields["category"].help_text = "Only listings in this category or below; empty for all."

    def clean_dry_run(self) -> bool:
        dry_run = bool(self.cleaned_data.get("dry_run"))
        if not dry_run and not self.can_apply:
            raise forms.ValidationError(BULK_APPLY_NEEDS_PERMISSION)
        return dry_run


class BulkJobErrorInline(ReadOnlyInline):
    model = BulkJobError
    fields = ["image", "reason", "attempts", "updated_at"]
    verbose_name = "photo that failed"
    verbose_name_plural = "error ledger"


@admin.register(BulkJob)
class BulkJobAdmin(admin.ModelAdmin):
    """Staff start, watch (progress, rate, ETA), cancel, resume, retry and apply bulk jobs here."""

    list_display = [
        "id",
        "kind",
        "model_version",
        "scope",
        "status",
        "progress",
        "rate",
        "eta",
        "failed_images",
        "changed_listings",
        "created_at",
    ]
    list_filter = ["status", "dry_run"]
    actions = ["cancel_jobs", "resume_jobs", "retry_failed_photos", "apply_dry_runs"]
    readonly_fields = [
        "kind",
        "model_version",
        "scope",
        "status",
        "failure_reason",
        "progress",
        "rate",
        "eta",
        "total_chunks",
        "done_chunks",
        "total_images",
        "processed_images",
        "suggested_images",
        "skipped_images",
        "failed_images",
        "cached_images",
        "cnn_images",
        "changed_listings",
        "report_summary",
        "source_job",
        "requested_by",
        "created_at",
        "started_at",
        "finished_at",
    ]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = BulkJobStartForm
        form = super().get_form(request, obj, change=change, **kwargs)
        # A class made for this request by modelform_factory: the flag never leaks to another user.
        form.can_apply = self.has_apply_permission(request)  # type: ignore[attr-defined]
        return form

    # Each action declares the permission it needs (`permissions=[...]` reads these methods), so
    # a staff member who may only view jobs is offered none of them.
    def has_run_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(BULK_RUN_PERMISSION)

    def has_apply_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(BULK_APPLY_PERMISSION)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return BulkJobStartForm.Meta.fields if obj is None else self.readonly_fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [] if obj is None else self.readonly_fields

    def get_inlines(self, request: HttpRequest, obj: Any) -> Any:
        return [] if obj is None else [BulkJobErrorInline]

    def save_model(self, request: HttpRequest, obj: BulkJob, form: Any, change: bool) -> None:
        if change:
            return
        job = bulk_job_start(
            model_version=form.cleaned_data["model_version"],
            category=form.cleaned_data["category"],
            dry_run=form.cleaned_data["dry_run"],
            requested_by=request.user,  # type: ignore[arg-type]
            chunk_size=form.cleaned_data["chunk_size"],
        )
        obj.pk = job.pk
        obj.created_at = job.created_at

    @admin.display(description="job")
    def kind(self, job: BulkJob) -> str:
        return "dry run" if job.dry_run else "apply"

    @admin.display(description="scope")
    def scope(self, job: BulkJob) -> str:
        return job.category.name if job.category_id and job.category else "all listings"

    @admin.display(description="progress")
    def progress(self, job: BulkJob) -> str:
        state = bulk_selectors.bulk_job_progress(job=job)
        return format_html(
            '<progress value="{}" max="{}" style="width:8em"></progress> {}% ({} of {} photos)',
            state.done,
            max(1, state.total),
            f"{state.percent:.0f}",
            state.done,
            state.total,
        )

    @admin.display(description="rate")
    def rate(self, job: BulkJob) -> str:
        rate = bulk_selectors.bulk_job_progress(job=job).rate_per_s
        return "–" if rate is None else f"{rate:,.0f} photos/s"

    @admin.display(description="ETA")
    def eta(self, job: BulkJob) -> str:
        eta = bulk_selectors.bulk_job_progress(job=job).eta_s
        if eta is None:
            return "–"
        minutes, seconds = divmod(round(eta), 60)
        return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"

    @admin.display(description="what changes")
    def report_summary(self, job: BulkJob) -> str:
        if job.status != BulkJobStatus.DONE:
            return "–"
        summary = bulk_job_summary(job=job)
        lines = summary.lines(dry_run=job.dry_run)
        sample = [
            f"listing {s['listing']} “{s['title']}”: "
            f"{s['from'] or '(none)'} → {s['to']} ({s['confidence']:.2f})"
            for s in summary.sample
        ]
        return format_html("<pre>{}</pre>", "\n".join(lines + (["", "sample:"] + sample if sample else [])))

    def _each(self, request: HttpRequest, queryset: Any, action: Any, done: str) -> None:
        count = 0
        for job in queryset:
            try:
                action(job=job)
                count += 1
            except BulkJobRefused as refused:
                self.message_user(request, f"Job {job.pk}: {refused}", messages.WARNING)
        if count:
            self.message_user(request, f"{done}: {count} job(s).", messages.SUCCESS)

    @admin.action(description="Cancel selected jobs", permissions=["run"])
    def cancel_jobs(self, request: HttpRequest, queryset: Any) -> None:
        self._each(request, queryset, bulk_job_cancel, "Cancelled")

    @admin.action(description="Resume selected jobs (finish what is missing)", permissions=["run"])
    def resume_jobs(self, request: HttpRequest, queryset: Any) -> None:
        self._each(request, queryset, bulk_job_resume, "Resumed")

    @admin.action(description="Retry the failed photos of selected jobs", permissions=["run"])
    def retry_failed_photos(self, request: HttpRequest, queryset: Any) -> None:
        self._each(request, queryset, bulk_job_retry_failed, "Retrying")

    @admin.action(description="Apply selected dry runs", permissions=["apply"])
    def apply_dry_runs(self, request: HttpRequest, queryset: Any) -> None:
        def apply(*, job: BulkJob) -> None:
            bulk_job_apply(job=job, requested_by=request.user)  # type: ignore[arg-type]

        self._each(request, queryset, apply, "Started")
