"""What the bulk tests share: listings with stored photos, synthetic cached backbone outputs, and
a job run chunk by chunk in this process as a worker runs it."""

from __future__ import annotations

from collections import Counter

import numpy as np

from catalog.models import BulkJob, CategorySuggestion, ImageEmbedding, Listing, ListingImage, ModelVersion
from catalog.services.bulk import planning
from catalog.services.embeddings import outputs_pack
from catalog.services.images import image_add
from catalog.tasks_contract import ChunkOutcome
from classifier.outputs import at_stored_precision
from tests.factories import ListingFactory, UserFactory
from workers import inference
from workers.bulk import chunk_run

NOT_A_PHOTO = b"<html><body>not a photo</body></html>"


def listing_with_photos(photos: list[bytes], **fields: object) -> Listing:
    """A listing of the bulk tests' seller with `photos` stored as uploads would store them."""
    listing = ListingFactory.create(seller=UserFactory.create(username="bulk-seller"), **fields)
    for number, data in enumerate(photos):
        image_add(listing=listing, upload=data, filename=f"p{number}.jpg")
    return listing


def cache_embeddings(images: list[ListingImage], seed: int = 0) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Store synthetic backbone outputs for the photos; returns them by image id."""
    rng = np.random.default_rng(seed)
    backbone = inference.get_classifier().backbone_version
    outputs = {}
    for image in images:
        embedding = rng.gamma(1.0, 0.5, 1280).astype(np.float32)
        logits = rng.normal(0.0, 3.0, 1000).astype(np.float32)
        outputs[image.pk] = (at_stored_precision(embedding), at_stored_precision(logits))
        ImageEmbedding.objects.create(
            image=image, backbone_version=backbone, outputs=outputs_pack(embedding, logits)
        )
    return outputs


def expected_category(embedding: np.ndarray, logits: np.ndarray) -> str:
    classifier = inference.get_classifier()
    scores = classifier.scores_from_outputs(embedding[None], logits[None])
    return classifier.top_k_from_scores(scores, 5)[0][0].slug


def run_job(job: BulkJob) -> list[ChunkOutcome]:
    """Plan the job, then run each of its chunks as a worker would; returns the outcomes."""
    planning.bulk_job_plan(job_id=job.pk)
    outcomes = [chunk_run(chunk_id=pk) for pk in job.chunks.order_by("index").values_list("pk", flat=True)]
    job.refresh_from_db()
    return outcomes


def suggestions_per_photo(version: ModelVersion) -> Counter[int]:
    return Counter(
        CategorySuggestion.objects.filter(model_version=version).values_list("image_id", flat=True)
    )
