"""Tracker issue 11, "Tenant isolation and hostile input": one regression test per
finding, against the HTTP API in-process (dispatcher off).

Each test is named after its finding (``test_f01_...``). They go through the
HTTP API, the settings' environment variables and files only (plus the
store's own record of what a request did), so the same file runs on a tree
from before the fixes and fails there on its assertions, not on an import.
Findings that need worker processes or the engine (4: the rendered
manifests, 7, 10, 11) are in ``tests/e2e/test_hostile_e2e.py``.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from automation.api.main import create_app
from automation.settings import Settings
from automation.store import OpStatus, Owner, Store, utcnow
from tests.api.conftest import ADMIN, ALICE, BOB, body

# -- helpers ---------------------------------------------------------------------------


def _configured(settings: Settings, **env: str) -> Settings:
    """``settings`` with more ``LLM_ENDPOINTS_*`` variables, as an operator sets them
    (an empty value unsets one)."""
    return Settings.from_env(env={**settings.to_env(), **env})


@contextmanager
def _app(settings: Settings, *, raise_errors: bool = True) -> Iterator[tuple[TestClient, Store]]:
    """The API (dispatcher off) under ``settings``, and its store."""
    app = create_app(settings, dispatch=False)
    with TestClient(
        app, base_url="http://127.0.0.1", raise_server_exceptions=raise_errors
    ) as client:
        yield client, client.app.state.ctx.store  # type: ignore[attr-defined]


def _nothing_recorded(store: Store, settings: Settings) -> None:
    assert store.list_endpoints(include_destroyed=True) == [], "an endpoint was recorded"
    assert store.list_operations() == [], "an operation was queued"
    drop_box = settings.secrets_root
    assert not drop_box.exists() or list(drop_box.iterdir()) == [], "the drop-box was written"
    assert not (settings.state_dir / "backend").exists(), "something reached Pulumi"
    render = settings.render_base
    assert not render.exists() or list(render.iterdir()) == [], "something was rendered"


def _vllm(**settings: Any) -> dict[str, Any]:
    """A ``vllm`` section the planner accepts, with more settings."""
    return {"max_model_len": 8192, **settings}


def _details(r: Any) -> list[str]:
    """The ``error.details`` lines of a response (none for a success)."""
    error = r.json().get("error") or {}
    return [str(d) for d in error.get("details", [])]


def _names_field(r: Any, field: str) -> bool:
    """Whether a 4xx response names ``field`` in its error details."""
    return any(d.startswith(f"{field}:") or d.startswith(f"{field}.") for d in _details(r))


def _owner() -> Owner:
    """An owner for claiming operations by hand (this test process)."""
    return Owner(host=socket.gethostname(), boot_id="test", pid=os.getpid(), pid_start=None)


def _run(store: Store, op_id: str, status: OpStatus = OpStatus.SUCCEEDED) -> None:
    """Play a worker: claim the queued operation and finish it."""
    assert store.claim(op_id, _owner()), f"operation {op_id} could not be claimed"
    assert store.finish(op_id, status)


# -- 1. namespaces are the server's ------------------------------------------------------


def test_f01_a_request_cannot_choose_a_namespace(
    client: TestClient, store: Store, settings: Settings
) -> None:
    accepted = []
    for i, namespace in enumerate(["kube-system", "default", "kube-public", "other-ep"]):
        r = client.post("/v1/endpoints", json=body(f"ns-{i}", namespace=namespace), headers=ALICE)
        # Over HTTP the request model has no such field ("Extra inputs are not
        # permitted"); the use-case layer (CLI) says "set by the server".
        if r.status_code != 422 or not _names_field(r, "namespace"):
            accepted.append(f"{namespace}: {r.status_code}")
    assert accepted == [], f"a request chose the namespace: {accepted}"
    _nothing_recorded(store, settings)


def test_f01_every_endpoint_gets_a_fresh_namespace_of_its_own(
    client: TestClient, store: Store
) -> None:
    for name, who in (("ns-a", ALICE), ("ns-b", BOB)):
        assert client.post("/v1/endpoints", json=body(name), headers=who).status_code == 202
    ns_a = store.get_endpoint("ns-a").spec.get("namespace")
    ns_b = store.get_endpoint("ns-b").spec.get("namespace")
    assert re.fullmatch(r"ns-a-[0-9a-f]{6}", str(ns_a)), ns_a
    assert re.fullmatch(r"ns-b-[0-9a-f]{6}", str(ns_b)), ns_b
    assert ns_a != ns_b


# -- 2. bounded input ----------------------------------------------------------------------


def test_f02_no_token_is_401_before_the_body_is_read(
    client: TestClient, store: Store, settings: Settings
) -> None:
    pulled = 0

    def chunks() -> Iterator[bytes]:  # 2 MB, chunked (no Content-Length), made lazily
        nonlocal pulled
        for _ in range(32):
            pulled += 1
            yield b" " * 65536

    r = client.post("/v1/endpoints", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 401, r.status_code
    assert pulled == 0, f"{pulled} chunks of an unauthenticated body were read"
    _nothing_recorded(store, settings)


def test_f02_bodies_and_headers_are_bounded(settings: Settings) -> None:
    limit = 65536
    bounded = _configured(settings, LLM_ENDPOINTS_MAX_BODY_BYTES=str(limit))
    # A well-formed create with a 2 MB vllm.extra_args item.
    big = json.dumps(body("big", vllm=_vllm(extra_args=["--x=" + "a" * 2_000_000]))).encode()
    with _app(bounded) as (client, store):
        r = client.post(
            "/v1/endpoints", content=big, headers={**ALICE, "Content-Type": "application/json"}
        )
        assert r.status_code == 413, r.status_code
        assert str(limit) in r.json()["error"]["message"]

        # The same without a Content-Length (chunked) is cut off as it passes the limit.
        r = client.post(
            "/v1/endpoints",
            content=_chunked(big),
            headers={**ALICE, "Content-Type": "application/json"},
        )
        assert r.status_code == 413, r.status_code

        # Headers of 20 KB.
        r = client.get("/v1/endpoints", headers={**ALICE, "X-Pad": "p" * 20_000})
        assert r.status_code == 431, r.status_code
        _nothing_recorded(store, bounded)


def _chunked(data: bytes, size: int = 65536) -> Iterator[bytes]:
    """``data`` as a chunked body (no Content-Length)."""
    for i in range(0, len(data), size):
        yield data[i : i + size]


def test_f02_chunked_body_over_the_limit_is_413(settings: Settings) -> None:
    bounded = _configured(settings, LLM_ENDPOINTS_MAX_BODY_BYTES="65536")
    big = json.dumps(body("big", vllm=_vllm(extra_args=["--x=" + "a" * 2_000_000]))).encode()
    with _app(bounded) as (client, store):
        r = client.post(
            "/v1/endpoints",
            content=_chunked(big),
            headers={**ALICE, "Content-Type": "application/json"},
        )
        _nothing_recorded(store, bounded)
        assert r.status_code == 413, r.text


def test_f02_fields_are_bounded(client: TestClient, store: Store, settings: Settings) -> None:
    cases: list[tuple[str, dict[str, Any]]] = [
        # A 10 KB flag, well inside the body limit.
        ("vllm.extra_args", {"vllm": _vllm(extra_args=["--enable-prefix-caching" + "x" * 10_000])}),
        ("vllm.extra_args", {"vllm": _vllm(extra_args=["--enforce-eager"] * 1000)}),
        ("labels", {"labels": {f"k{i}": "v" for i in range(2000)}}),
        ("hf_token", {"hf_token": "hf_" + "a" * 20_000}),
        ("instance_type", {"instance_type": "g" * 10_000}),
    ]
    accepted = []
    for i, (field, extra) in enumerate(cases):
        started = time.monotonic()
        r = client.post("/v1/endpoints", json=body(f"bounded-{i}", **extra), headers=ALICE)
        elapsed = time.monotonic() - started
        if r.status_code != 422 or not _names_field(r, field):
            accepted.append(f"{field}: {r.status_code}")
            continue
        assert len(r.content) < 4096, "the error echoes the input"
        assert elapsed < 5, f"{elapsed:.1f}s to refuse it"
    assert accepted == [], f"oversized fields accepted: {accepted}"
    _nothing_recorded(store, settings)


# -- 3. vLLM flags by allow-list ------------------------------------------------------------

SECRET_API_KEY = "sk-CANARYapikey0123456789"
SECRET_HF_TOKEN = "hf_CANARYhostile0123456789abc"
HOSTILE_FLAGS: list[list[str]] = [
    ["--hos=0.0.0.0"],  # argparse expands a unique prefix: --host
    ["--hos", "0.0.0.0"],
    ["--tensor-parallel=8"],
    ["--max-model-le=1000000"],
    ["--trust-remote-code"],
    ["--allowed-local-media-path=/"],
    ["--middleware=evil.module.Middleware"],
    ["--chat-template=/etc/passwd"],
    [f"--api-key={SECRET_API_KEY}"],
    [f"--hf-token={SECRET_HF_TOKEN}"],
]


def test_f03_extra_args_are_an_allow_list(
    client: TestClient, store: Store, settings: Settings
) -> None:
    accepted = []
    for i, args in enumerate(HOSTILE_FLAGS):
        r = client.post(
            "/v1/endpoints", json=body(f"flags-{i}", vllm=_vllm(extra_args=args)), headers=ALICE
        )
        if r.status_code != 422 or not _names_field(r, "vllm.extra_args"):
            accepted.append(f"{args}: {r.status_code}")
        assert SECRET_API_KEY not in r.text and SECRET_HF_TOKEN not in r.text
    assert accepted == [], f"hostile vLLM flags accepted: {accepted}"
    _nothing_recorded(store, settings)


def test_f03_remote_code_only_for_models_an_admin_allows(settings: Settings) -> None:
    refusing = _configured(settings)
    spec = body("remote", vllm=_vllm(trust_remote_code=True))
    with _app(refusing) as (c, store):
        r = c.post("/v1/endpoints", json=spec, headers=ALICE)
        assert r.status_code == 422, r.status_code
        assert _names_field(r, "vllm.trust_remote_code"), _details(r)
        _nothing_recorded(store, refusing)
    allowing = _configured(settings, LLM_ENDPOINTS_REMOTE_CODE_MODELS=spec["model"])
    with _app(allowing) as (c, store):
        assert c.post("/v1/endpoints", json=spec, headers=ALICE).status_code == 202


# -- 4. endpoint API keys (the rendered Secret is in the e2e file) -------------------------


def test_f04_api_key_for_the_owner_only_and_rotation(client: TestClient, store: Store) -> None:
    assert client.post("/v1/endpoints", json=body("keyed"), headers=ALICE).status_code == 202
    r = client.get("/v1/endpoints/keyed/api-key", headers=ALICE)
    assert r.status_code == 200, r.status_code
    assert r.headers["cache-control"] == "no-store"
    first = r.json()
    key = first["api_key"]
    assert first["endpoint"] == "keyed" and first["version"] == 1
    assert re.fullmatch(r"llme-[0-9a-f]{48}", key), key
    # Nobody else gets it, not even an administrator; alike for a missing endpoint.
    for who in (BOB, ADMIN):
        assert client.get("/v1/endpoints/keyed/api-key", headers=who).status_code == 404
    assert client.get("/v1/endpoints/nobody/api-key", headers=ALICE).status_code == 404
    assert client.post("/v1/endpoints/keyed/api-key/rotate", headers=BOB).status_code == 404

    r = client.post("/v1/endpoints/keyed/api-key/rotate", headers=ALICE)
    assert r.status_code == 202, r.text
    assert r.json()["operation"]["kind"] == "up"
    assert store.get_endpoint("keyed").api_key_version == 2
    second = client.get("/v1/endpoints/keyed/api-key", headers=ALICE).json()
    assert second["version"] == 2 and second["api_key"] != key

    # Neither key is in any other response.
    texts = [
        client.get(url, headers=h).text
        for url in ("/v1/endpoints", "/v1/endpoints/keyed", "/v1/endpoints/keyed/operations")
        for h in (ALICE, ADMIN)
    ]
    texts += [r.text, client.get("/openapi.json").text]
    for text in texts:
        assert key not in text and second["api_key"] not in text


# -- 5. no HF token written to disk unless the operator allows it ---------------------------


def test_f05_hf_token_on_the_render_target_needs_the_operators_consent(
    settings: Settings,
) -> None:
    token = "hf_CANARYrender0123456789abcdef"
    plain = _configured(settings, LLM_ENDPOINTS_RENDER_SECRETS="")
    with _app(plain) as (c, store):
        r = c.post("/v1/endpoints", json=body("gated", hf_token=token), headers=ALICE)
        assert r.status_code == 422, r.status_code
        assert _names_field(r, "hf_token"), _details(r)
        assert "plain text" in " ".join(_details(r))
        assert token not in r.text
        _nothing_recorded(store, plain)
        # Without a token the same request is fine.
        assert c.post("/v1/endpoints", json=body("gated"), headers=ALICE).status_code == 202
    allowing = _configured(settings, LLM_ENDPOINTS_RENDER_SECRETS="allow")
    with _app(allowing) as (c, store):
        r = c.post("/v1/endpoints", json=body("gated-ok", hf_token=token), headers=ALICE)
        assert r.status_code == 202, r.text


# -- 6. a reused name does not hand over its history ----------------------------------------


def test_f06_a_reused_name_does_not_show_the_old_owners_operations(
    client: TestClient, store: Store
) -> None:
    alice_up = client.post("/v1/endpoints", json=body("reused"), headers=ALICE).json()
    up_id = alice_up["operation"]["id"]
    store.append_log(up_id, ["alice's private log line"])
    _run(store, up_id)
    destroy_id = client.delete("/v1/endpoints/reused", headers=ALICE).json()["operation"]["id"]
    _run(store, destroy_id)
    assert client.get("/v1/endpoints/reused", headers=ALICE).json()["status"] == "destroyed"

    r = client.post("/v1/endpoints", json=body("reused"), headers=BOB)
    assert r.status_code == 202, r.text
    bob_up = r.json()["operation"]["id"]

    for old in (up_id, destroy_id):
        assert client.get(f"/v1/operations/{old}", headers=BOB).status_code == 404
        events = client.get(f"/v1/operations/{old}/events", headers=BOB)
        assert events.status_code == 404 and "private" not in events.text
        assert client.post(f"/v1/operations/{old}/cancel", headers=BOB).status_code == 404
    listed = client.get("/v1/endpoints/reused/operations", headers=BOB).json()["operations"]
    assert [o["id"] for o in listed] == [bob_up]
    assert client.get(f"/v1/operations/{bob_up}", headers=BOB).status_code == 200
    # Nothing of alice's changed; an administrator still sees the whole history.
    assert store.get_operation(up_id).status is OpStatus.SUCCEEDED
    assert client.get(f"/v1/operations/{up_id}", headers=ADMIN).status_code == 200


# -- 8. a strict tokens file ----------------------------------------------------------------

ALICE_FILE_TOKEN = "alice-file-token-0123456789"
MALLORY_TOKEN = "mallory-token-0123456789"


def _tokens_file(settings: Settings, tmp_path: Path, tokens: dict[str, Any]) -> Settings:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps(tokens))
    return _configured(settings, LLM_ENDPOINTS_TOKENS="", LLM_ENDPOINTS_TOKENS_FILE=str(path))


def test_f08_admin_must_be_a_real_boolean(settings: Settings, tmp_path: Path) -> None:
    s = _tokens_file(
        settings,
        tmp_path,
        {
            ALICE_FILE_TOKEN: {"user": "alice"},
            MALLORY_TOKEN: {"user": "mallory", "admin": "false"},
        },
    )
    with pytest.raises(ValueError, match="'admin' must be true or false"), _app(s) as (c, _):
        # Reached only by a server that started with this file.
        assert (
            c.post(
                "/v1/endpoints",
                json=body("private"),
                headers={"Authorization": f"Bearer {ALICE_FILE_TOKEN}"},
            ).status_code
            == 202
        )
        seen = c.get("/v1/endpoints", headers={"Authorization": f"Bearer {MALLORY_TOKEN}"})
        assert seen.json()["endpoints"] == [], '"admin": "false" made mallory an administrator'
    # Unknown keys are refused too (a typo never becomes a default).
    s = _tokens_file(settings, tmp_path, {MALLORY_TOKEN: {"user": "mallory", "role": "admin"}})
    with pytest.raises(ValueError, match="unknown keys"), _app(s):
        pass


def test_f08_reserved_user_names_are_refused(settings: Settings, tmp_path: Path) -> None:
    mallory = {"Authorization": f"Bearer {MALLORY_TOKEN}"}
    for user in ("teardown", "Teardown", "system", "cli"):
        s = _tokens_file(
            settings, tmp_path, {ALICE_FILE_TOKEN: {"user": "alice"}, MALLORY_TOKEN: {"user": user}}
        )
        alice = {"Authorization": f"Bearer {ALICE_FILE_TOKEN}"}
        with pytest.raises(ValueError, match="reserved"), _app(s) as (c, store):
            # Reached only by a server that started with this file: the teardown's
            # own operation on another tenant's endpoint.
            name = f"victim-{user.lower()}"
            up = c.post("/v1/endpoints", json=body(name, ttl="1h"), headers=alice)
            _run(store, up.json()["operation"]["id"])
            later = utcnow() + timedelta(days=365)
            op = store.claim_expired(name, later, requested_by=user.lower())
            assert op is not None
            r = c.get(f"/v1/operations/{op.id}", headers=mallory)
            assert r.status_code == 404, f"a user named {user!r} read another tenant's teardown"


def test_f08_a_bad_edit_keeps_the_previous_tokens(settings: Settings, tmp_path: Path) -> None:
    s = _tokens_file(settings, tmp_path, {ALICE_FILE_TOKEN: {"user": "alice"}})
    path = s.tokens_file
    assert path is not None
    alice = {"Authorization": f"Bearer {ALICE_FILE_TOKEN}"}
    mallory = {"Authorization": f"Bearer {MALLORY_TOKEN}"}
    with _app(s, raise_errors=False) as (c, _):
        assert c.get("/v1/endpoints", headers=alice).status_code == 200
        # A broken edit: a string for admin (and a new token that would be an admin).
        path.write_text(
            json.dumps(
                {ALICE_FILE_TOKEN: {"user": "alice"}, MALLORY_TOKEN: {"user": "m", "admin": "yes"}}
            )
        )
        future = time.time() + 5
        os.utime(path, (future, future))
        r = c.get("/v1/endpoints", headers=alice)
        assert r.status_code == 200, f"a bad edit broke the running server: {r.status_code}"
        assert c.get("/v1/endpoints", headers=mallory).status_code == 401
        # A good edit is taken.
        path.write_text(json.dumps({MALLORY_TOKEN: {"user": "mallory"}}))
        os.utime(path, (future + 5, future + 5))
        assert c.get("/v1/endpoints", headers=mallory).status_code == 200
        assert c.get("/v1/endpoints", headers=alice).status_code == 401


# -- 9. absurd ttls ------------------------------------------------------------------------------


def test_f09_absurd_ttl_is_422_naming_ttl(settings: Settings) -> None:
    with _app(settings, raise_errors=False) as (c, store):
        assert c.post("/v1/endpoints", json=body("ttl-ext", ttl="1h"), headers=ALICE).is_success
        expires = store.get_endpoint("ttl-ext").expires_at
        wrong = []
        for i, ttl in enumerate(["1000000000d", "999999999999d", "99999999999h"]):
            r = c.post("/v1/endpoints", json=body(f"ttl-{i}", ttl=ttl), headers=ALICE)
            if r.status_code != 422 or not _names_field(r, "ttl"):
                wrong.append(f"create ttl {ttl}: {r.status_code}")
            r = c.post("/v1/endpoints/ttl-ext/extend", json={"ttl": ttl}, headers=ALICE)
            if r.status_code != 422 or not _names_field(r, "ttl"):
                wrong.append(f"extend ttl {ttl}: {r.status_code}")
        assert wrong == [], f"not a 422 naming ttl: {wrong}"
        assert store.get_endpoint("ttl-ext").expires_at == expires
        assert [e.name for e in store.list_endpoints(include_destroyed=True)] == ["ttl-ext"]


# -- 12. quotas and fairness ------------------------------------------------------------------


def test_f12_quotas_are_429_naming_the_quota(settings: Settings, tmp_path: Path) -> None:
    def quota_hit(r: Any, quota: str) -> None:
        assert r.status_code == 429, f"{quota}: {r.status_code}"
        assert r.json()["error"]["code"] == "quota_exceeded"
        assert f"quota.{quota}" in r.json()["error"]["message"]

    servers = itertools.count()

    def fresh(**env: str) -> Settings:  # each server with a store of its own
        state = tmp_path / f"quota-{next(servers)}"
        return _configured(settings, LLM_ENDPOINTS_STATE_DIR=str(state), **env)

    s = fresh(LLM_ENDPOINTS_QUOTA_ENDPOINTS="2")
    with _app(s) as (c, store):
        for name in ("qe-1", "qe-2"):
            assert c.post("/v1/endpoints", json=body(name), headers=ALICE).status_code == 202
        quota_hit(c.post("/v1/endpoints", json=body("qe-3"), headers=ALICE), "endpoints")
        assert store.find_endpoint("qe-3") is None
        # Another user has a quota of their own; an administrator has none.
        assert c.post("/v1/endpoints", json=body("qe-bob"), headers=BOB).status_code == 202
        for name in ("qe-r1", "qe-r2", "qe-r3"):
            assert c.post("/v1/endpoints", json=body(name), headers=ADMIN).status_code == 202

    s = fresh(LLM_ENDPOINTS_QUOTA_QUEUED="2")
    with _app(s) as (c, store):
        for name in ("qq-1", "qq-2"):
            assert c.post("/v1/endpoints", json=body(name), headers=ALICE).status_code == 202
        quota_hit(c.post("/v1/endpoints", json=body("qq-3"), headers=ALICE), "queued")
        quota_hit(c.post("/v1/endpoints/qq-1/redeploy", headers=ALICE), "queued")
        # A destroy is never refused.
        assert c.delete("/v1/endpoints/qq-1", headers=ALICE).status_code == 202

    # One g5.xlarge is 1 GPU and $1.006/h.
    for env, quota in (
        ({"LLM_ENDPOINTS_QUOTA_ACCELERATORS": "1"}, "accelerators"),
        ({"LLM_ENDPOINTS_QUOTA_COST_PER_HOUR": "1.5"}, "cost_per_hour"),
    ):
        s = fresh(**env)
        with _app(s) as (c, store):
            assert c.post("/v1/endpoints", json=body("qa-1"), headers=ALICE).status_code == 202
            quota_hit(c.post("/v1/endpoints", json=body("qa-2"), headers=ALICE), quota)
            assert store.find_endpoint("qa-2") is None

    # A per-user quota in the tokens file.
    carol = {"Authorization": "Bearer carol-token-0123456789"}
    tokens = {
        "carol-token-0123456789": {"user": "carol", "quota": {"endpoints": 1}},
        "alice-token-0123456789": {"user": "alice"},
    }
    s = fresh(LLM_ENDPOINTS_TOKENS=json.dumps(tokens))
    with _app(s) as (c, _):
        assert c.post("/v1/endpoints", json=body("qc-1"), headers=carol).status_code == 202
        quota_hit(c.post("/v1/endpoints", json=body("qc-2"), headers=carol), "endpoints")
        for name in ("qc-a1", "qc-a2"):
            assert c.post("/v1/endpoints", json=body(name), headers=ALICE).status_code == 202


def test_f12_claiming_is_fair_between_users(client: TestClient, store: Store) -> None:
    alice = [
        client.post("/v1/endpoints", json=body(f"fa-{i}"), headers=ALICE).json()["operation"]["id"]
        for i in range(5)
    ]
    bob = client.post("/v1/endpoints", json=body("fb-0"), headers=BOB).json()["operation"]["id"]

    order = [op.id for op in store.claimable(limit=10)]
    assert sorted(order) == sorted([*alice, bob])
    # Queued after all of alice's, bob's only create is among the first two to run.
    assert order.index(bob) <= 1, f"bob's create is #{order.index(bob) + 1} of {len(order)}"
    assert order[0] == alice[0], "each user's own operations stay oldest first"
    # Once alice has one running, bob's comes first.
    assert store.claim(alice[0], _owner())
    order = [op.id for op in store.claimable(limit=10)]
    assert order[0] == bob, f"bob's create is #{order.index(bob) + 1} with alice running one"
    assert [i for i in order if i != bob] == alice[1:]


# -- 13. validation before the 202 --------------------------------------------------------------


LATE_FAILURES: list[tuple[str, dict[str, Any]]] = [
    ("labels", {"labels": {"bad key!": "x"}}),
    ("labels", {"labels": {"team": "not valid!"}}),
    ("labels", {"labels": {"team": "x" * 64}}),
    ("labels", {"labels": {"kubernetes.io/managed-by": "me"}}),
    ("labels", {"labels": {"karpenter.sh/nodepool": "other"}}),
    ("labels", {"labels": {"llm-endpoints/endpoint": "other"}}),
    ("labels", {"labels": {f"k{i}": "v" for i in range(17)}}),
    ("storage.prefix", {"storage": {"kind": "pvc", "prefix": "../../etc"}}),
    ("storage.prefix", {"storage": {"kind": "pvc", "prefix": "/abs/path"}}),
    ("storage.prefix", {"storage": {"kind": "pvc", "prefix": "a b;rm -rf"}}),
    ("storage.storage_class", {"storage": {"kind": "pvc", "storage_class": "Bad_Class"}}),
    ("storage.storage_class", {"storage": {"kind": "none", "storage_class": "gp3"}}),
    ("storage.file_system_id", {"storage": {"kind": "efs", "file_system_id": "fs-XYZ"}}),
    ("storage.file_system_id", {"storage": {"kind": "pvc", "file_system_id": "fs-0123abcd"}}),
    ("storage.bucket", {"storage": {"kind": "s3", "bucket": "Bad_Bucket", "prefetch": True}}),
]


def test_f13_bad_fields_are_422_before_anything_is_recorded(
    client: TestClient, store: Store, settings: Settings
) -> None:
    accepted = []
    for i, (field, extra) in enumerate(LATE_FAILURES):
        r = client.post("/v1/endpoints", json=body(f"late-{i}", **extra), headers=ALICE)
        if r.status_code != 422 or not _names_field(r, field):
            accepted.append(f"{field} {extra}: {r.status_code}")
    assert accepted == [], f"accepted, to fail later inside pulumi up: {accepted}"
    _nothing_recorded(store, settings)
