"""Celery workers: the app, queue names, tasks and per-process model loading."""

from workers.celery import app

__all__ = ["app"]
