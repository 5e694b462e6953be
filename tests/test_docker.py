"""The docker/ files cannot be built here (no engine); check what can be checked without one."""

from __future__ import annotations

import yaml

from tests.conftest import REPO_ROOT

DOCKER = REPO_ROOT / "docker"


def test_compose_file_parses_and_every_role_has_a_command() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "web", "worker-classify", "worker-bulk", "beat", "flower"} <= set(
        services
    )
    for name in ("web", "worker-classify", "worker-bulk", "beat", "flower", "migrate"):
        assert services[name]["command"], name
    # fresh uploads and bulk work never share a worker
    assert "-Q" in services["worker-classify"]["command"]
    classify_queues = services["worker-classify"]["command"][
        services["worker-classify"]["command"].index("-Q") + 1
    ]
    assert classify_queues == "classify"


def test_compose_needs_real_secrets_and_keeps_them_off_command_lines() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yml").read_text())
    services = compose["services"]
    # every app role refuses to start without a secret key: no public default to fall back on
    for name in ("migrate", "web", "worker-classify", "worker-bulk", "beat", "flower"):
        assert services[name]["environment"]["DJANGO_SECRET_KEY"].startswith("${DJANGO_SECRET_KEY:?"), name
    # Flower refuses to start without credentials, and reads them from its environment (not `ps`)
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert not [arg for arg in services["flower"]["command"] if "auth" in arg]
    # the example file carries no value that would pass for a secret
    example = dict(
        line.split("=", 1)
        for line in (DOCKER / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert (example["DJANGO_SECRET_KEY"], example["FLOWER_BASIC_AUTH"]) == ("", "")


def test_dockerfile_copies_requirements_before_the_source_and_exports_the_backbone() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert text.index("COPY requirements.txt") < text.index("COPY . .")
    assert "python -m classifier export" in text
    assert "USER app" in text
