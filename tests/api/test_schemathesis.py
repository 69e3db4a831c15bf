"""Schemathesis against the live ASGI app: every operation of the OpenAPI schema,
fuzzed with a fixed seed and a bounded number of examples, with real bearer
tokens; no response may be a 5xx or stray from the schema.

Two passes, both through schemathesis's own ASGI transport (the app's lifespan
runs, the dispatcher is off):

* **generated**: every operation, positive and negative data, everything
  generated (names and ids mostly miss, so this is where validation, 401,
  404 and 422 are exercised);
* **existing**: the operations on one endpoint or operation, with the path
  fixed to records that exist (a ready endpoint, a creating one, a finished
  and a cancelled operation), so the 200 and 202 bodies are checked too.

The schemathesis pytest plugin's lazy loader (``schemathesis.pytest.from_fixture``)
does not work with this pytest (``'Function' object has no attribute
'_nodeid'``), so the test drives Hypothesis itself over each operation's
strategy. It prints its figures (``-s`` shows them).
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.python.asgi import get_client, shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from automation.api.main import create_app
from automation.settings import Settings
from automation.store import OpStatus, Owner, Store
from tests.support import ALICE, TOKENS_JSON, request

SEED = 20261201
#: Examples per operation and generation mode in the generated pass.
GENERATED_EXAMPLES = 40
#: Examples per operation and fixed path in the existing pass.
EXISTING_EXAMPLES = 15

CHECKS: list[Callable[..., Any]] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    missing_required_header,
    unsupported_method,
    ignored_auth,
    # Not positive_data_acceptance: the schema does not carry every rule of a
    # request (the name and model patterns, the planner's sizing, cross-field
    # rules), so a schema-valid request may rightly get its documented 422.
]


def _token(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


@pytest.fixture
def app(tmp_path: Path) -> Iterator[FastAPI]:
    settings = Settings.from_env(
        env={
            "LLM_ENDPOINTS_STATE_DIR": str(tmp_path / "state"),
            "LLM_ENDPOINTS_RENDER_ROOT": str(tmp_path / "rendered"),
            "LLM_ENDPOINTS_TOKENS": TOKENS_JSON,
            "LLM_ENDPOINTS_MAX_TTL": "2d",
            # Never the real Hugging Face Hub (models it fetches configs of): a closed port.
            "LLM_ENDPOINTS_HF_ENDPOINT": "http://127.0.0.1:9",
        }
    )
    yield create_app(settings, dispatch=False)
    shutdown_lifespans()  # schemathesis started the app's lifespan; end it with the test


def _schema(app: FastAPI, headers: dict[str, str] = ALICE) -> Any:
    config = SchemathesisConfig.from_dict(
        {"auth": {"openapi": {"HTTPBearer": {"bearer": _token(headers)}}}}
    )
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=config)


def _seed_records(app: FastAPI) -> dict[str, str]:
    """Records for the existing pass, made through the API (as alice)."""
    schema = _schema(app)  # loading it starts the app's lifespan
    store: Store = app.state.ctx.store
    ids: dict[str, str] = {}
    owner = Owner(host=socket.gethostname(), boot_id="test", pid=os.getpid(), pid_start=None)
    with get_client(cast(Any, app)) as client:  # FastAPI's own ASGI types differ
        for name in ("st-ready", "st-creating", "st-cancelled"):
            r = client.post("/v1/endpoints", json=request(name, ttl="1h"), headers=ALICE)
            assert r.status_code == 202, r.text
            ids[name] = r.json()["operation"]["id"]
        assert store.claim(ids["st-ready"], owner)
        store.append_log(ids["st-ready"], ["one", "two"])
        assert store.finish(ids["st-ready"], OpStatus.SUCCEEDED)
        r = client.post(f"/v1/operations/{ids['st-cancelled']}/cancel", headers=ALICE)
        assert r.status_code == 202, r.text
    assert schema is not None
    return ids


class Run:
    """Figures of one run: examples, checks, statuses, failures."""

    def __init__(self) -> None:
        self.examples = 0
        self.checks = 0
        self.statuses: Counter[int] = Counter()
        self.failures: list[str] = []
        self.unsatisfiable: list[str] = []

    def fuzz(self, op: Any, strategy: Any, examples: int, label: str) -> None:
        @given(case=strategy)
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @seed(SEED)
        def one(case: Any) -> None:
            self.examples += 1
            response = case.call()
            self.statuses[response.status_code] += 1
            checks = CHECKS
            self.checks += len(checks)
            try:
                case.validate_response(response, checks=checks)
            except Exception as e:  # collected: one line per distinct failure
                first = str(e).strip().splitlines()
                self.failures.append(f"{label}: {' | '.join(first[:6])}")

        try:
            one()
        except Unsatisfiable:  # e.g. no negative data for an operation without inputs
            self.unsatisfiable.append(label)


def test_schemathesis_no_5xx_and_every_response_conforms(app: FastAPI) -> None:
    started = time.monotonic()
    ids = _seed_records(app)
    schema = _schema(app)
    run = Run()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 14, [op.label for op in operations]

    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = op.as_strategy(generation_mode=mode)
            run.fuzz(op, strategy, GENERATED_EXAMPLES, f"{op.label} [{mode.value}]")

    fixed: dict[str, list[str]] = {
        # A ready endpoint, a creating one, and one whose create was cancelled (failed).
        "name": ["st-ready", "st-creating", "st-cancelled"],
        # Finished operations only: the event stream of a queued one runs until it ends.
        "op_id": [ids["st-ready"], ids["st-cancelled"]],
    }
    for op in operations:
        params = {p.name for p in op.path_parameters}
        for param in sorted(params & set(fixed)):
            for value in fixed[param]:
                strategy = op.as_strategy(path_parameters={param: value})
                run.fuzz(op, strategy, EXISTING_EXAMPLES, f"{op.label} [{param}={value}]")

    elapsed = time.monotonic() - started
    print(
        f"\nschemathesis {schemathesis.__version__}: {len(operations)} operations, "
        f"{run.examples} examples, {run.checks} checks, {elapsed:.1f}s; statuses "
        f"{dict(sorted(run.statuses.items()))}; "
        f"no negative data for {run.unsatisfiable}"
    )
    assert run.failures == [], "\n".join(run.failures)
    assert 200 in run.statuses and 202 in run.statuses, "the success bodies were not checked"
    assert not any(code >= 500 for code in run.statuses)


# -- what the run found in code this test does not own ----------------------------------------


def test_undecodable_body_status_is_documented(app: FastAPI) -> None:
    schema = _schema(app)
    op = schema["/v1/endpoints/{name}/extend"]["POST"]
    case = op.Case(path_parameters={"name": "st-x"}, body=None, media_type="application/json")
    response = case.call(data=b"\xff\xfe{", headers={**ALICE, "Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    case.validate_response(response, checks=[status_code_conformance])


def test_quota_status_is_documented(app: FastAPI) -> None:
    schema = _schema(app)
    op = schema["/v1/endpoints"]["POST"]
    responses = [  # the default quota is 5 live endpoints per user
        op.Case(body=request(f"st-q{i}"), media_type="application/json").call(headers=ALICE)
        for i in range(6)
    ]
    assert [r.status_code for r in responses] == [202] * 5 + [429]
    case = op.Case(body=request("st-q5"), media_type="application/json")
    case.validate_response(responses[-1], checks=[status_code_conformance])
