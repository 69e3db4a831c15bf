"""The HTTP API without the engine: auth, validation, records, queueing, errors."""

from __future__ import annotations

import json
import os
import stat
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from automation.procs import owner_of
from automation.secrets import secret_path
from automation.settings import Settings
from automation.store import EndpointStatus, OpKind, OpStatus, Store, utcnow
from tests.api.conftest import ADMIN, ALICE, BOB, body

CANARY = "hf_CANARYapiTEST0123456789abcdef"


def _nothing_recorded(store: Store, settings: Settings) -> None:
    assert store.list_endpoints(include_destroyed=True) == []
    assert store.list_operations() == []
    secrets = settings.secrets_root
    assert not secrets.exists() or list(secrets.iterdir()) == []
    backend = settings.state_dir / "backend"
    assert not backend.exists(), "nothing may reach Pulumi"


# -- auth -------------------------------------------------------------------------


def test_healthz_needs_no_token(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "database": "ok", "dispatcher": "disabled"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-0123456789"},
        {"Authorization": "Basic YWxpY2U6eA=="},
        {"Authorization": "Bearer "},
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/endpoints"),
        ("POST", "/v1/endpoints"),
        ("GET", "/v1/endpoints/x1"),
        ("DELETE", "/v1/endpoints/x1"),
        ("GET", "/v1/operations/00000000-0000-0000-0000-000000000000"),
    ],
)
def test_every_route_but_health_needs_a_token(
    client: TestClient,
    store: Store,
    settings: Settings,
    headers: dict[str, str],
    method: str,
    path: str,
) -> None:
    r = client.request(method, path, headers=headers, json=body("x1", hf_token=CANARY))
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["code"] == "unauthorized"
    assert CANARY not in r.text
    _nothing_recorded(store, settings)


def test_users_see_only_their_own_endpoints(client: TestClient, store: Store) -> None:
    assert client.post("/v1/endpoints", json=body("alice-1"), headers=ALICE).status_code == 202
    assert client.post("/v1/endpoints", json=body("bob-1"), headers=BOB).status_code == 202
    op_id = store.get_endpoint("alice-1").last_operation_id

    def names(h: dict[str, str]) -> list[str]:
        return [e["name"] for e in client.get("/v1/endpoints", headers=h).json()["endpoints"]]

    assert names(ALICE) == ["alice-1"]
    assert names(BOB) == ["bob-1"]
    assert sorted(names(ADMIN)) == ["alice-1", "bob-1"]
    assert [
        e["name"]
        for e in client.get("/v1/endpoints", params={"owner": "bob"}, headers=ADMIN).json()[
            "endpoints"
        ]
    ] == ["bob-1"]

    # Another user's endpoint and operation are 404, exactly like a missing one.
    for method, path, kw in [
        ("GET", "/v1/endpoints/alice-1", {}),
        ("DELETE", "/v1/endpoints/alice-1", {}),
        ("POST", "/v1/endpoints/alice-1/extend", {"json": {"ttl": "1h"}}),
        ("POST", "/v1/endpoints/alice-1/redeploy", {}),
        ("GET", "/v1/endpoints/alice-1/operations", {}),
        ("GET", f"/v1/operations/{op_id}", {}),
        ("GET", f"/v1/operations/{op_id}/events", {}),
        ("POST", f"/v1/operations/{op_id}/cancel", {}),
    ]:
        r = client.request(method, path, headers=BOB, **kw)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"]["code"] == "not_found"
        missing = client.request(method, path.replace("alice-1", "nobody"), headers=BOB, **kw)
        if "operations/" not in path:
            assert missing.status_code == 404

    # Nothing bob did changed alice's endpoint.
    assert store.get_endpoint("alice-1").status is EndpointStatus.CREATING
    assert [o.kind for o in store.list_operations("alice-1")] == [OpKind.UP]
    # The admin can.
    assert client.get("/v1/endpoints/alice-1", headers=ADMIN).status_code == 200


# -- create -----------------------------------------------------------------------


def test_create_records_first_and_answers_202(
    client: TestClient, store: Store, settings: Settings
) -> None:
    before = utcnow()
    r = client.post("/v1/endpoints", json=body("llama-dev", ttl="2h"), headers=ALICE)
    assert r.status_code == 202, r.text
    data = r.json()
    op = data["operation"]
    assert op["status"] == "queued" and op["kind"] == "up" and op["endpoint"] == "llama-dev"
    assert data["replayed"] is False
    assert r.headers["location"] == f"/v1/operations/{op['id']}"
    assert data["links"]["events"] == f"/v1/operations/{op['id']}/events"

    ep = store.get_endpoint("llama-dev")
    assert ep.owner == "alice" and ep.status is EndpointStatus.CREATING
    assert ep.last_operation_id == op["id"]
    # The planner's figures are on the record before anything runs.
    assert ep.instance_type == "g5.xlarge" and ep.cost_per_hour == pytest.approx(1.006)
    assert ep.expires_at is not None
    assert before + timedelta(hours=2) <= ep.expires_at <= utcnow() + timedelta(hours=2)
    # The server chose where it goes: its own render folder, not the request.
    assert ep.spec["cluster"] == {
        **ep.spec["cluster"],
        "mode": "existing",
        "render_dir": str(settings.render_base / "llama-dev"),
    }
    assert ep.spec["pool"]["mode"] == "none"

    shown = client.get("/v1/endpoints/llama-dev", headers=ALICE).json()
    assert shown["status"] == "creating"
    assert shown["instance_type"] == "g5.xlarge"
    assert shown["last_operation"]["id"] == op["id"]
    assert client.get(f"/v1/operations/{op['id']}", headers=ALICE).json()["status"] == "queued"


def test_default_ttl_and_bounds(client: TestClient, store: Store, settings: Settings) -> None:
    assert client.post("/v1/endpoints", json=body("t1"), headers=ALICE).status_code == 202
    ep = store.get_endpoint("t1")
    assert ep.spec["ttl"] == settings.default_ttl
    assert ep.expires_at is not None
    assert abs((ep.expires_at - utcnow()) - settings.default_ttl_delta) < timedelta(minutes=1)

    r = client.post("/v1/endpoints", json=body("t2", ttl="3d"), headers=ALICE)
    assert r.status_code == 422
    assert r.json()["error"]["details"] == ["ttl: '3d' is longer than this server's maximum 2d"]
    r = client.post("/v1/endpoints", json=body("t3", ttl="5m"), headers=ALICE)
    assert r.status_code == 422
    assert "outside the allowed range" in r.json()["error"]["details"][0]
    assert store.find_endpoint("t2") is None and store.find_endpoint("t3") is None


BAD_NAMES = [
    "Bad_Name",
    "-lead",
    "trail-",
    "a" * 41,
    "two\nlines",
    "../etc",
    "--flag",
    "",
    "x y",
    "{{name}}",
]
BAD_MODELS = [
    "owner/name---x",
    "owner/{{x}}",
    "owner/na\nme",
    "--trust-remote-code",
    "owner/--flag",
    "owner/../x",
    "a/b\n--x",
    "$(id)/x",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_422_and_reach_nothing(
    client: TestClient, store: Store, settings: Settings, name: str
) -> None:
    r = client.post("/v1/endpoints", json=body(name, hf_token=CANARY), headers=ALICE)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] in ("invalid_spec", "invalid_request")
    assert any(d.startswith("name") for d in err["details"]), err
    assert CANARY not in r.text
    _nothing_recorded(store, settings)


@pytest.mark.parametrize("model", BAD_MODELS)
def test_bad_model_ids_are_422_and_reach_nothing(
    client: TestClient, store: Store, settings: Settings, model: str
) -> None:
    r = client.post(
        "/v1/endpoints", json=body("ok-name", model=model, hf_token=CANARY), headers=ALICE
    )
    assert r.status_code == 422, r.text
    assert any("model" in d for d in r.json()["error"]["details"]), r.text
    assert CANARY not in r.text
    _nothing_recorded(store, settings)


#: Issue 9: specs the API once accepted (202) that then failed inside ``pulumi up``.
ACCEPT_THEN_FAIL = [
    ({"vllm": {"max_model_len": 8192, "extra_args": ["--served-model-name=x"]}}, "vllm.extra_args"),
    (
        {"vllm": {"max_model_len": 8192, "extra_args": ["--distributed-executor-backend=ray"]}},
        "vllm.extra_args",
    ),
    ({"exposure": {"kind": "internal-alb", "cidrs": ["0.0.0.0/0"]}}, "exposure.cidrs"),
]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"vllm": {"max_model_len": 8192, "extra_args": ["--x\n--y"]}}, "vllm.extra_args"),
        ({"vllm": {"max_model_len": 8192, "extra_args": ["--model=evil"]}}, "vllm.extra_args"),
        ({"cluster": {"mode": "existing", "render_dir": "/etc"}}, "cluster"),
        ({"pool": {"mode": "karpenter"}}, "pool"),
        ({"instance_type": "g9.huge"}, "instance_type"),
        ({"replicas": 0}, "replicas"),
        ({"namespace": "Kube_System"}, "namespace"),
        ({"hf_token": 12345}, "hf_token"),
        ({"surprise": True}, "surprise"),
        *ACCEPT_THEN_FAIL,
    ],
)
def test_other_bad_fields_are_named(
    client: TestClient, store: Store, settings: Settings, extra: dict, field: str
) -> None:
    r = client.post("/v1/endpoints", json=body("ok-name", **extra), headers=ALICE)
    assert r.status_code == 422, r.text
    details = r.json()["error"]["details"]
    assert any(d.startswith(field) for d in details), details
    assert "12345" not in r.text  # input is never echoed
    _nothing_recorded(store, settings)


def test_a_forty_character_name_is_accepted(client: TestClient, store: Store) -> None:
    """The spec's longest name: every component built from it accepts it too (the
    property test in tests/unit/test_spec_builds.py builds it)."""
    name = "n" * 40
    r = client.post("/v1/endpoints", json=body(name), headers=ALICE)
    assert r.status_code == 202, r.text
    assert store.get_endpoint(name).name == name


def test_malformed_json_is_422(client: TestClient, store: Store, settings: Settings) -> None:
    r = client.post(
        "/v1/endpoints",
        content=b'{"name": "x", "hf_token": "' + CANARY.encode() + b'"',
        headers={**ALICE, "content-type": "application/json"},
    )
    assert r.status_code == 422
    assert CANARY not in r.text
    _nothing_recorded(store, settings)


def test_planner_refusal_is_422_with_the_numbers(
    client: TestClient, store: Store, settings: Settings
) -> None:
    r = client.post(
        "/v1/endpoints",
        json={
            "name": "too-big",
            "model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B",
            "instance_type": "g5.xlarge",
        },
        headers=ALICE,
    )
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "plan_error"
    assert "61.06 GiB" in err["message"] and "g5.xlarge" in err["message"]
    _nothing_recorded(store, settings)


def test_name_of_a_live_endpoint_is_409(client: TestClient, store: Store) -> None:
    assert client.post("/v1/endpoints", json=body("dup"), headers=ALICE).status_code == 202
    for headers in (ALICE, BOB):
        r = client.post("/v1/endpoints", json=body("dup"), headers=headers)
        assert r.status_code == 409
        assert r.json()["error"]["code"] == "conflict"
        assert "alice" not in r.text  # the owner of a name is not disclosed
    assert len(store.list_operations("dup")) == 1


def test_idempotency_key_returns_the_same_operation(
    client: TestClient, store: Store, settings: Settings
) -> None:
    h = {**ALICE, "Idempotency-Key": "create-llama-1"}
    first = client.post("/v1/endpoints", json=body("idem", hf_token=CANARY), headers=h)
    again = client.post("/v1/endpoints", json=body("idem", hf_token=CANARY), headers=h)
    assert first.status_code == again.status_code == 202
    assert again.json()["operation"]["id"] == first.json()["operation"]["id"]
    assert again.json()["replayed"] is True
    assert len(store.list_operations("idem")) == 1
    # Only the first request's secret waits for a worker.
    assert sorted(p.name for p in settings.secrets_root.iterdir()) == [
        f"{first.json()['operation']['id']}.hf_token"
    ]
    # The same key for a different request is refused; another user's same key is theirs.
    other = client.post("/v1/endpoints", json=body("idem-2"), headers=h)
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    bobs = client.post(
        "/v1/endpoints", json=body("idem-b"), headers={**BOB, "Idempotency-Key": "create-llama-1"}
    )
    assert bobs.status_code == 202
    assert bobs.json()["operation"]["id"] != first.json()["operation"]["id"]


def test_secret_goes_to_a_0600_dropbox_only(
    client: TestClient, store: Store, settings: Settings
) -> None:
    r = client.post("/v1/endpoints", json=body("sec", hf_token=CANARY), headers=ALICE)
    assert r.status_code == 202
    assert CANARY not in r.text
    op_id = r.json()["operation"]["id"]
    path = secret_path(settings, op_id)
    assert path.read_text() == CANARY
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    for url in ("/v1/endpoints/sec", f"/v1/operations/{op_id}", "/v1/endpoints"):
        assert CANARY not in client.get(url, headers=ALICE).text
    raw = json.dumps(store.get_endpoint("sec").spec) + repr(store.get_operation(op_id))
    assert CANARY not in raw
    db = settings.state_dir / "control-plane.db"
    for f in db.parent.glob("control-plane.db*"):
        assert CANARY.encode() not in f.read_bytes()


# -- destroy, redeploy, refresh, extend, cancel --------------------------------------


def test_delete_queues_behind_the_create_and_repeats_are_the_same(
    client: TestClient, store: Store
) -> None:
    create = client.post("/v1/endpoints", json=body("d1"), headers=ALICE).json()
    r1 = client.delete("/v1/endpoints/d1", headers=ALICE)
    r2 = client.delete("/v1/endpoints/d1", headers=ALICE)
    assert r1.status_code == r2.status_code == 202
    assert r1.json()["operation"]["kind"] == "destroy"
    assert r2.json()["operation"]["id"] == r1.json()["operation"]["id"]
    assert r2.json()["replayed"] is True
    ops = store.list_operations("d1")
    assert [(o.kind, o.status) for o in ops] == [
        (OpKind.UP, OpStatus.QUEUED),
        (OpKind.DESTROY, OpStatus.QUEUED),
    ]
    assert ops[0].id == create["operation"]["id"]
    assert store.get_endpoint("d1").status is EndpointStatus.DESTROYING
    # While it is going away it cannot be re-created, redeployed or extended.
    assert client.post("/v1/endpoints", json=body("d1"), headers=ALICE).status_code == 409
    assert client.post("/v1/endpoints/d1/redeploy", headers=ALICE).status_code == 409
    r = client.post("/v1/endpoints/d1/extend", json={"ttl": "1h"}, headers=ALICE)
    assert r.status_code == 409


def test_queue_depth_is_bounded(client: TestClient, store: Store, settings: Settings) -> None:
    client.post("/v1/endpoints", json=body("q1"), headers=ALICE)
    codes = [
        client.post("/v1/endpoints/q1/redeploy", headers=ALICE).status_code
        for _ in range(settings.max_queued_per_endpoint + 1)
    ]
    assert codes == [202] * (settings.max_queued_per_endpoint - 1) + [409, 409]
    assert len(store.list_operations("q1")) == settings.max_queued_per_endpoint


def test_refresh_of_a_rendered_endpoint_is_422(client: TestClient, store: Store) -> None:
    client.post("/v1/endpoints", json=body("r1"), headers=ALICE)
    r = client.post("/v1/endpoints/r1/refresh", headers=ALICE)
    assert r.status_code == 422
    assert "rendered" in r.json()["error"]["message"]
    assert len(store.list_operations("r1")) == 1


def test_extend_is_bounded(client: TestClient, store: Store) -> None:
    client.post("/v1/endpoints", json=body("e1", ttl="1h"), headers=ALICE)
    r = client.post("/v1/endpoints/e1/extend", json={"ttl": "1d"}, headers=ALICE)
    assert r.status_code == 200, r.text
    expires = store.get_endpoint("e1").expires_at
    assert expires is not None
    assert abs(expires - (utcnow() + timedelta(days=1))) < timedelta(minutes=1)
    for ttl, msg in [
        ("3d", "longer than this server's maximum"),
        ("1m", "allowed range"),
        ("soon", "not a duration"),
    ]:
        r = client.post("/v1/endpoints/e1/extend", json={"ttl": ttl}, headers=ALICE)
        assert r.status_code == 422
        assert msg in r.json()["error"]["message"]
    assert store.get_endpoint("e1").expires_at == expires
    assert (
        client.post("/v1/endpoints/Bad_Name/extend", json={"ttl": "1h"}, headers=ALICE).status_code
        == 422
    )


def test_cancel_a_queued_create(client: TestClient, store: Store, settings: Settings) -> None:
    op = client.post("/v1/endpoints", json=body("c1", hf_token=CANARY), headers=ALICE).json()[
        "operation"
    ]
    r = client.post(f"/v1/operations/{op['id']}/cancel", headers=ALICE)
    assert r.status_code == 202
    assert r.json()["status"] == "interrupted"
    ep = store.get_endpoint("c1")
    assert ep.status is EndpointStatus.FAILED and ep.lock_op_id is None
    # A failed endpoint can be destroyed (nothing was built, but the record says so).
    assert client.delete("/v1/endpoints/c1", headers=ALICE).status_code == 202


def test_events_stream_ndjson_and_sse(client: TestClient, store: Store) -> None:
    op_id = client.post("/v1/endpoints", json=body("ev1"), headers=ALICE).json()["operation"]["id"]
    assert store.claim(op_id, owner_of())
    store.append_log(op_id, ["one", "two"])
    store.finish(op_id, OpStatus.SUCCEEDED)

    r = client.get(f"/v1/operations/{op_id}/events", headers=ALICE)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/x-ndjson")
    events = [json.loads(line) for line in r.text.splitlines()]
    assert [e.get("line") for e in events if e["type"] == "log"] == ["one", "two"]
    assert events[-1] == {"type": "end", "status": "succeeded", "error": None}

    r = client.get(
        f"/v1/operations/{op_id}/events",
        headers={**ALICE, "Accept": "text/event-stream", "Last-Event-ID": "0"},
    )
    assert r.headers["content-type"].startswith("text/event-stream")
    frames = [f for f in r.text.split("\n\n") if f]
    assert frames[0].startswith("id: ") and "event: log" in frames[0]
    assert frames[-1].startswith("event: end")
    first_id = int(frames[0].split("\n")[0].removeprefix("id: "))
    resumed = client.get(
        f"/v1/operations/{op_id}/events", headers={**ALICE, "Last-Event-ID": str(first_id)}
    )
    lines = [json.loads(x) for x in resumed.text.splitlines()]
    assert [e.get("line") for e in lines if e["type"] == "log"] == ["two"]


def test_unknown_operation_ids_are_404(client: TestClient) -> None:
    for op_id in ("not-a-uuid", "00000000-0000-0000-0000-000000000000"):
        r = client.get(f"/v1/operations/{op_id}", headers=ADMIN)
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "not_found"


def test_openapi_documents_routes_errors_and_auth(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    expected = {
        ("/v1/endpoints", "post"),
        ("/v1/endpoints", "get"),
        ("/v1/endpoints/{name}", "get"),
        ("/v1/endpoints/{name}", "delete"),
        ("/v1/endpoints/{name}/extend", "post"),
        ("/v1/operations/{op_id}", "get"),
        ("/v1/operations/{op_id}/events", "get"),
        ("/healthz", "get"),
    }
    for path, method in expected:
        op = paths[path][method]
        assert op["summary"], (path, method)
        assert "200" in op["responses"] or "202" in op["responses"]
    create = paths["/v1/endpoints"]["post"]
    assert create["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorBody"
    )
    assert "409" in create["responses"] and "401" in create["responses"]
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    assert "security" not in paths["/healthz"]["get"]
    props = spec["components"]["schemas"]["EndpointOut"]["properties"]
    for field in (
        "status",
        "url",
        "model",
        "instance_type",
        "cost_per_hour",
        "expires_at",
        "last_operation",
    ):
        assert field in props
    assert "hf_token" not in json.dumps(spec["components"]["schemas"]["EndpointOut"])
