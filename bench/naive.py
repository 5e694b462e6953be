"""The baseline of the benchmark: what a naive project does.

One Celery task per photo; the photo read through the storage API and fully decoded (no JPEG draft
mode); an eager torchvision ResNet-50 (random weights: only the time matters) on one photo at a
time; the top-5 written with the ORM. Run as its own worker:

    celery -A bench.naive worker -Q naive -c 1

Torch uses every core of the process (`NAIVE_THREADS`, default all), as a default install does.
With `CLASSIFIER_DEVICE=cuda` the network runs on the GPU, in a solo-pool worker (no fork).
"""

from __future__ import annotations

import io
import os
from typing import Any

from celery import Celery, signals
from django.conf import settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

QUEUE = "naive"
TASK = "bench.naive.naive_classify_task"
VERSION = "bench-naive-resnet50"

app = Celery("bench-naive")
app.conf.update(
    broker_url=settings.CELERY_BROKER_URL,
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_default_queue=QUEUE,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
)

_model: Any = None


DEVICE = "cuda" if os.environ.get("CLASSIFIER_DEVICE") == "cuda" else "cpu"


@signals.worker_process_init.connect
def _load(**_: Any) -> Any:
    global _model
    import torch
    import torchvision

    torch.set_num_threads(int(os.environ.get("NAIVE_THREADS") or os.cpu_count() or 1))
    _model = torchvision.models.resnet50(weights=None).eval().to(DEVICE)
    return _model


@app.task(name=TASK)
def naive_classify_task(image_id: int) -> str:
    import torch
    from django.core.files.storage import default_storage
    from PIL import Image
    from torchvision import transforms

    from catalog.models import Category, CategorySuggestion, ListingImage, ModelVersion

    image = ListingImage.objects.get(pk=image_id)
    with default_storage.open(str(image.file.name), "rb") as handle:
        pixels = Image.open(io.BytesIO(handle.read())).convert("RGB")
    prepare = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    model = _model if _model is not None else _load()  # a solo pool sends no worker_process_init
    with torch.no_grad():
        probabilities = model(prepare(pixels).unsqueeze(0).to(DEVICE)).softmax(dim=1)[0].cpu()
    top = probabilities.topk(5)
    categories = list(Category.objects.order_by("pk").values_list("pk", "slug"))
    entries = [
        (categories[int(index) % len(categories)], float(score))
        for score, index in zip(top.values, top.indices, strict=True)
    ]
    CategorySuggestion.objects.update_or_create(
        image=image,
        model_version=ModelVersion.objects.get(name=VERSION),
        defaults={
            "category_id": entries[0][0][0],
            "confidence": entries[0][1],
            "top_k": [{"slug": slug, "confidence": score} for (_, slug), score in entries],
        },
    )
    return "done"
