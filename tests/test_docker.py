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


def test_dockerfile_installs_a_lock_file_before_the_source_and_exports_the_backbone() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert text.index("COPY ${REQUIREMENTS} requirements.lock") < text.index("COPY . .")
    assert "ARG REQUIREMENTS=requirements.txt" in text
    assert "pip install --require-hashes -r requirements.lock" in text
    assert "python -m classifier export" in text
    assert "USER app" in text


def test_web_sits_behind_a_proxy_with_the_same_body_cap_as_django() -> None:
    from django.conf import settings

    compose = yaml.safe_load((DOCKER / "compose.yml").read_text())
    services = compose["services"]
    template = (DOCKER / "nginx.conf.template").read_text()

    # the proxy publishes the port; web is reachable only through it, and trusts that one proxy
    assert services["proxy"]["ports"] == ["8000:80"]
    assert "ports" not in services["web"]
    assert services["web"]["environment"]["TRUSTED_PROXY_COUNT"] == "1"
    assert "proxy_pass http://web:8000;" in template
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in template

    # both read one REQUEST_MAX_BYTES whose default is Django's default
    assert "client_max_body_size ${REQUEST_MAX_BYTES};" in template
    for name in ("proxy", "web"):
        value = services[name]["environment"]["REQUEST_MAX_BYTES"]
        assert value == f"${{REQUEST_MAX_BYTES:-{settings.REQUEST_MAX_BYTES}}}", name
    mounted = services["proxy"]["volumes"][0].split(":")
    assert mounted[:2] == ["./nginx.conf.template", "/etc/nginx/templates/default.conf.template"]
