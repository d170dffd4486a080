"""The public JSON endpoints against docs/openapi.yaml, with schemathesis.

Schemathesis generates requests from the schema (valid and invalid ones) and sends them
to the WSGI app in-process: no answer may be a 5xx, and every answer must match what the
schema says (status code, content type, body).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from course.app import create_app
from course.db import upgrade
from course.models import SchedulerTick, utcnow
from tests.conftest import make_config
from tests.helpers import REPO

SCHEMA_PATH = REPO / "docs" / "openapi.yaml"


# The schema is loaded at import (for parametrize); the app it talks to is built by the
# fixture below, inside the test session, on a temporary database.
schema = schemathesis.openapi.from_path(SCHEMA_PATH)
schema.config.update(base_url="https://course.example.org")  # COURSE_BASE_URL in make_config


@pytest.fixture(scope="module")
def api_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    tmp: Path = tmp_path_factory.mktemp("api")
    url = f"sqlite:///{tmp / 'course.db'}"
    upgrade(url)
    app = create_app(
        make_config(
            tmp,
            url,
            ALLOWED_ORIGINS=["https://yourpractice.example"],
            # Hundreds of generated requests come from one address: the limits are tested
            # in test_security.py; here they would only turn answers into 429s.
            SUBSCRIBE_LIMIT_PER_CLIENT="100000 per minute",
            SUBSCRIBE_LIMIT_WITHOUT_ORIGIN="100000 per minute",
        )
    )
    # A scheduler's heartbeat, so /healthz answers 200 (its 503s are tested in test_health).
    with app.extensions["course"].sessions() as session, session.begin():
        session.add(SchedulerTick(worker="api-test", last_tick_at=utcnow()))
    yield app
    app.extensions["course"].engine.dispose()


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_public_api_matches_its_schema(case: Any, api_app: Flask) -> None:
    """No 5xx, and every answer is one the schema describes."""
    case.call_and_validate(
        app=api_app,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
            negative_data_rejection,
        ],
    )
