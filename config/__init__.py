"""Project configuration: Django settings, URLs, storage and the Celery app."""

# Django's Celery layout: the app loads with the project, so `celery -A config` finds it.
from config.celery import app as celery_app

__all__ = ["celery_app"]
