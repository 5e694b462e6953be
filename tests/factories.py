"""factory_boy factories for the rows tests build.

Call `XFactory.create(...)` (or `.build()`, `.create_batch(n)`): those are typed with the model,
whereas mypy types the bare `XFactory(...)` call as the factory class.
"""

from __future__ import annotations

from typing import Any

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.utils import timezone

from catalog.models import (
    BulkJob,
    ImageEmbedding,
    Listing,
    ListingImage,
    ModelComparison,
    ModelVersion,
    TrainingRun,
)


class UserFactory(factory.django.DjangoModelFactory[User]):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"seller{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.com")
    password = factory.django.Password("a-long-test-password")


class ListingFactory(factory.django.DjangoModelFactory[Listing]):
    """A published listing with no category and no photo."""

    class Meta:
        model = Listing

    seller = factory.SubFactory(UserFactory)
    title = factory.Sequence(lambda n: f"Item {n}")
    description = "Gently used."
    published_at = factory.LazyFunction(timezone.now)


class ListingImageFactory(factory.django.DjangoModelFactory[ListingImage]):
    """A photo row whose file name points at nothing stored (for tests that never read the bytes);
    stored photos come from `services.images.image_add`."""

    class Meta:
        model = ListingImage

    listing = factory.SubFactory(ListingFactory)
    file = factory.Sequence(lambda n: f"listings/test/{n}.jpg")
    checksum = "0" * 64
    size_bytes = 1


class ModelVersionFactory(factory.django.DjangoModelFactory[ModelVersion]):
    """A version with a (placeholder) head artifact; `classes` names the head's categories in its
    manifest, the `bare` trait leaves the artifact empty. `is_active=True` makes it the one active
    version (any other active one is deactivated first)."""

    class Meta:
        model = ModelVersion

    class Params:
        classes: list[str] | None = None
        bare = factory.Trait(head_manifest={}, head_npz=b"")

    name = factory.Sequence(lambda n: f"lite0+test-v{n}")
    backbone_version = "lite0"
    head_manifest = factory.LazyAttribute(
        lambda row: {"version": row.name} | ({"classes": row.classes} if row.classes is not None else {})
    )
    head_npz = b"npz"

    @classmethod
    def _create(cls, model_class: type[ModelVersion], *args: Any, **kwargs: Any) -> ModelVersion:
        if kwargs.get("is_active"):
            ModelVersion.objects.filter(is_active=True).update(is_active=False)
        return super()._create(model_class, *args, **kwargs)


class ModelComparisonFactory(factory.django.DjangoModelFactory[ModelComparison]):
    class Meta:
        model = ModelComparison

    candidate = factory.SubFactory(ModelVersionFactory)
    baseline = factory.SubFactory(ModelVersionFactory)
    photos = 10
    candidate_accuracy = 0.9
    baseline_accuracy = 0.8


class TrainingRunFactory(factory.django.DjangoModelFactory[TrainingRun]):
    class Meta:
        model = TrainingRun


class BulkJobFactory(factory.django.DjangoModelFactory[BulkJob]):
    """A job of 100 photos a chunk, PLANNING until told otherwise."""

    class Meta:
        model = BulkJob

    model_version = factory.SubFactory(ModelVersionFactory)
    chunk_size = 100


class ImageEmbeddingFactory(factory.django.DjangoModelFactory[ImageEmbedding]):
    """Cached backbone outputs (zeros unless given) for backbone version "b"."""

    class Meta:
        model = ImageEmbedding

    image = factory.SubFactory(ListingImageFactory)
    backbone_version = "b"
    outputs = b"\0" * 4560
