"""Settings for static analysis only: mypy's django-stubs plugin loads them to learn the models.

They are the real settings with a throwaway key, so type checking works on a machine without
DJANGO_SECRET_KEY. Nothing is ever served with them; never point DJANGO_SETTINGS_MODULE here.
"""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "django-insecure-type-checking-only")

from config.settings import *  # noqa: E402, F403
