"""The many-row writes and the embedding cache's reader and writer, which the upload path (one
row) and the bulk path share: the same rows whichever path writes them, and exactly the cached
arrays back."""

from __future__ import annotations

import numpy as np
import pytest

from catalog.models import CategorySuggestion, ImageEmbedding, Listing, ListingImage, ModelVersion
from catalog.pgcopy import copy_out, fixed_width_rows
from catalog.services.embeddings import embeddings_read, embeddings_write, outputs_pack
from catalog.services.suggestions import (
    NO_KNOWN_CATEGORY,
    PhotoScores,
    ScoredCategory,
    image_classification_record,
    listing_suggestion_refresh,
    model_version_ensure,
    suggestions_record_many,
)
from classifier.outputs import at_stored_precision
from tests.factories import ImageEmbeddingFactory, ListingFactory, ListingImageFactory

pytestmark = pytest.mark.django_db

SUGGESTION_FIELDS = ("image_id", "model_version_id", "category_id", "confidence", "top_k")
LISTING_FIELDS = ("suggested_category_id", "suggested_confidence", "suggested_top_k", "suggested_margin")


def _photos(count: int) -> list[ListingImage]:
    listing = ListingFactory.create()
    return [
        ListingImageFactory.create(listing=listing, file=f"rows/{n}.jpg", position=n) for n in range(count)
    ]


def _top_k(seed: int) -> list[tuple[str, float]]:
    rng = np.random.default_rng(seed)
    confidences = np.sort(rng.dirichlet(np.ones(6)))[::-1][:5]
    # float64 values with many digits, and a slug the database does not know in third place
    return list(
        zip(["dress", "shirt", "no-such-category", "hat", "shoes"], confidences.tolist(), strict=True)
    )


def _rows(version: ModelVersion, image_ids: list[int]) -> list[tuple[object, ...]]:
    return list(
        CategorySuggestion.objects.filter(model_version=version, image_id__in=image_ids)
        .order_by("image_id")
        .values_list(*SUGGESTION_FIELDS)
    )


def test_copied_suggestions_are_the_rows_the_upload_path_writes() -> None:
    # given two versions and the same photos' top-k, one of them with a category unknown here
    version_copy = model_version_ensure(name="copy-path", backbone_version="b")
    version_upload = model_version_ensure(name="upload-path", backbone_version="b")
    images = _photos(4)
    scores = [PhotoScores(image_id=image.pk, top_k=_top_k(n)) for n, image in enumerate(images)]

    # when the bulk path writes them for one version and the upload path for the other
    stored, failed = suggestions_record_many(model_version=version_copy, scores=scores)
    for image, photo in zip(images, scores, strict=True):
        image_classification_record(
            image=image,
            model_version=version_upload,
            top_k=[ScoredCategory(slug, confidence) for slug, confidence in photo.top_k],
        )

    # then the rows are identical but for the version, and the top-k returned is the one stored
    ids = [image.pk for image in images]
    copied, uploaded = _rows(version_copy, ids), _rows(version_upload, ids)
    assert [row[:1] + row[2:] for row in copied] == [row[:1] + row[2:] for row in uploaded]
    assert all(len(row[4]) == 4 for row in copied)  # type: ignore[arg-type]
    assert {row[0]: row[4] for row in copied} == stored
    assert failed == {}
    # and the listing derives the same suggestion from either version's rows
    listing = images[0].listing
    listing_suggestion_refresh(listing=listing, model_version=version_copy)
    from_copy = Listing.objects.values(*LISTING_FIELDS).get(pk=listing.pk)
    listing_suggestion_refresh(listing=listing, model_version=version_upload)
    assert Listing.objects.values(*LISTING_FIELDS).get(pk=listing.pk) == from_copy


def test_a_second_copy_updates_the_rows_in_place_and_unknown_categories_fail_alone() -> None:
    # given suggestions already written for three photos
    version = model_version_ensure(name="copy-path", backbone_version="b")
    images = _photos(3)
    suggestions_record_many(
        model_version=version, scores=[PhotoScores(image.pk, _top_k(0)) for image in images]
    )
    before = dict(CategorySuggestion.objects.filter(model_version=version).values_list("image_id", "pk"))

    # when they are written again with other scores, one photo having no known category at all
    again = [PhotoScores(images[0].pk, [("hat", 0.7), ("dress", 0.2)])]
    again += [PhotoScores(images[1].pk, [("no-such-category", 0.9)])]
    stored, failed = suggestions_record_many(model_version=version, scores=again)

    # then the first photo's row is updated in place, the second fails with its reason and keeps
    # its row, and the third is untouched
    rows = {row[0]: row for row in _rows(version, [image.pk for image in images])}
    assert (
        dict(CategorySuggestion.objects.filter(model_version=version).values_list("image_id", "pk")) == before
    )
    assert rows[images[0].pk][4] == [{"slug": "hat", "confidence": 0.7}, {"slug": "dress", "confidence": 0.2}]
    assert rows[images[0].pk][3] == 0.7
    assert failed == {images[1].pk: NO_KNOWN_CATEGORY} and images[1].pk not in stored
    assert rows[images[1].pk][4] == rows[images[2].pk][4]


def test_a_dry_run_writes_nothing() -> None:
    version = model_version_ensure(name="copy-path", backbone_version="b")
    (image,) = _photos(1)
    stored, _ = suggestions_record_many(
        model_version=version, scores=[PhotoScores(image.pk, _top_k(1))], write=False
    )
    assert list(stored) == [image.pk] and not CategorySuggestion.objects.exists()


def test_cached_embeddings_come_back_exactly_in_photo_order_and_damaged_rows_are_left_out() -> None:
    # given five photos with cached outputs for backbone "b" (one of them of the wrong size) and
    # one photo cached only for another backbone
    images = _photos(6)
    rng = np.random.default_rng(3)
    arrays = {}
    for image in images[:5]:
        embedding, logits = rng.random(1280, dtype=np.float32), rng.normal(size=1000).astype(np.float32)
        arrays[image.pk] = (embedding, logits)
        outputs = outputs_pack(embedding, logits)
        ImageEmbeddingFactory.create(image=image, outputs=outputs[:1000] if image == images[2] else outputs)
    ImageEmbeddingFactory.create(image=images[5], backbone_version="other")

    # when read back for backbone "b", asked in reverse order
    cached = embeddings_read(image_ids=[image.pk for image in reversed(images)], backbone_version="b")

    # then the intact rows come back, in primary-key order, as the classifier rounds them (float16)
    expected = [image.pk for image in images[:5] if image != images[2]]
    assert cached.image_ids == expected
    for column, values in enumerate((cached.embeddings, cached.logits)):
        wanted = np.stack([arrays[pk][column] for pk in expected])
        assert values.dtype == np.float16
        np.testing.assert_array_equal(values, at_stored_precision(wanted))
        np.testing.assert_allclose(values, wanted, rtol=2**-11, atol=2**-24)  # float16 subnormals
    assert embeddings_read(image_ids=[], backbone_version="b").image_ids == []


def test_the_embedding_writer_replaces_a_row_and_skips_photos_deleted_meanwhile() -> None:
    # given a photo with a damaged cached row, and the id of a photo deleted meanwhile
    kept, deleted = _photos(2)
    ImageEmbeddingFactory.create(image=kept, outputs=b"\0" * 8)
    deleted_id = deleted.pk
    deleted.delete()
    embedding, logits = np.ones(1280, np.float32), np.full(1000, 2.0, np.float32)

    # when both photos' outputs are written
    rows = [(pk, embedding, logits) for pk in (kept.pk, deleted_id)]
    embeddings_write(backbone_version="b", rows=rows)

    # then the damaged row is replaced and nothing is cached for the deleted photo
    assert list(ImageEmbedding.objects.values_list("image_id", flat=True)) == [kept.pk]
    cached = embeddings_read(image_ids=[kept.pk, deleted_id], backbone_version="b")
    np.testing.assert_array_equal(cached.embeddings[0], embedding)
    np.testing.assert_array_equal(cached.logits[0], logits)


def test_outputs_of_the_wrong_size_are_refused_with_a_reason_and_nothing_is_cached() -> None:
    # given a photo and a backbone output with a truncated embedding
    (image,) = _photos(1)
    short = (image.pk, np.ones(640, np.float32), np.zeros(1000, np.float32))

    # when it is written, then it is refused with the sizes, and no row is left behind
    with pytest.raises(ValueError, match="Expected an embedding of 1280 values and 1000 logits, got 640"):
        embeddings_write(backbone_version="b", rows=[short])
    assert not ImageEmbedding.objects.exists()


def test_a_copy_output_not_of_the_expected_layout_is_refused() -> None:
    fields = [("value", ">i8", 1)]
    assert fixed_width_rows(copy_out("SELECT 7::bigint"), fields)["value"].tolist() == [7]  # type: ignore[index]
    assert fixed_width_rows(copy_out("SELECT 7::int4"), fields) is None
    assert fixed_width_rows(copy_out("SELECT NULL::bigint"), fields) is None
    assert fixed_width_rows(copy_out("SELECT 7::bigint, 8::bigint"), fields) is None
