"""The API does what its OpenAPI schema says: schemathesis runs every check it has (status codes,
content types, response bodies against the schema, schema-valid requests accepted and invalid
ones refused, auth, methods) against the live server with a seller's token, on a fixed seed and
a bounded number of examples per operation. Settings that bend a check are in schemathesis.toml
next to this file, each with its reason."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from knox.models import AuthToken

from tests.factories import UserFactory

CONFIG = Path(__file__).with_name("schemathesis.toml")
SEED = 1
# Per operation and phase: the whole run stays under a minute on two cores.
MAX_EXAMPLES = 5


@pytest.mark.usefixtures("taxonomy")
def test_the_api_answers_as_its_schema_says(live_server, settings, tmp_path: Path) -> None:
    # given a seller with a token, no waiting for a worker on POST /api/classify, and rates that let
    # every generated request reach the API (throttles have tests of their own)
    settings.CLASSIFY_API_WAIT_S = 0
    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {scope: "100000/minute" for scope in rates},
    }
    _, token = AuthToken.objects.create(user=UserFactory.create())

    # when schemathesis tests every operation of the served schema
    result = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run",
         f"{live_server.url}/api/schema/",
         "--checks", "all", "--seed", str(SEED), "--max-examples", str(MAX_EXAMPLES),
         "--header", f"Authorization: Token {token}",
         "--workers", "2", "--request-timeout", "30", "--generation-database", "none", "--no-color"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip

    # then no check fails
    assert result.returncode == 0, result.stdout[-20_000:] + result.stderr[-5_000:]
    selected = re.search(r"Selected: (\d+)/\d+", result.stdout)
    assert selected and f"Tested: {selected[1]}" in result.stdout


def test_the_schema_offers_a_file_picker_and_documents_the_errors(client) -> None:
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    components = schema["components"]["schemas"]

    # uploads are binary, so Swagger's "Try it out" shows a file picker
    for path in ("/api/classify", "/api/listings/{id}/photos/"):
        body = schema["paths"][path]["post"]["requestBody"]["content"]
        assert list(body) == ["multipart/form-data"]
        upload = components[body["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]]
        assert upload["properties"]["file"]["format"] == "binary"
    # a listing's suggested category is null until a photo is classified
    assert components["Listing"]["properties"]["suggested_category"]["nullable"] is True
    # every operation documents its errors, all as JSON
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            assert {"405", "500"} <= codes, (method, path)
            if any(operation.get("security", [])):  # needs a token or a session
                assert "401" in codes, (method, path)
            if "{" in path:
                assert "404" in codes, (method, path)
            for code in codes - {"200", "201", "202", "204", "422"}:
                assert list(operation["responses"][code]["content"]) == ["application/json"], (
                    method,
                    path,
                    code,
                )
