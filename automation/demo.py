"""The README's main job: the control plane on the embedded default, end to end.

``make demo`` (``python -m automation.demo``) plans a model, starts the HTTP
API on 127.0.0.1 with its dispatcher (local file backend and render target in
``.state/``), creates an endpoint over HTTP, follows its operation log until it
is ready, and shows what was rendered. Nothing leaves the machine. The endpoint
is left in place so its manifests can be read; the last lines say how to
destroy it. Running the demo again shows the existing endpoint instead of
creating a second one.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import httpx

from automation.local_server import local_server
from automation.settings import Settings
from automation.toolchain import REPO_ROOT

NAME = "demo"
MODEL = "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"
REQUEST = {
    "name": NAME,
    "model": MODEL,
    "instance_type": "g5.xlarge",
    "ttl": "8h",
    "vllm": {"max_model_len": 8192},
}
STARTUP_TIMEOUT_S = 60
OPERATION_TIMEOUT_S = 600


def _step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def _follow(client: httpx.Client, op_id: str) -> str:
    """Print the operation's log as it streams; return its final status."""
    status = "unknown"
    with client.stream(
        "GET", f"/v1/operations/{op_id}/events", timeout=OPERATION_TIMEOUT_S
    ) as stream:
        for line in stream.iter_lines():
            if not line:
                continue
            event = json.loads(line)
            if event.get("line"):
                print(f"    {event['line']}", flush=True)
            if event.get("type") == "end":
                status = str(event.get("status"))
    return status


def run() -> int:
    """Run the demo; return the process exit code."""
    settings = Settings.from_env()
    user_token = secrets.token_urlsafe(24)
    env = {
        **os.environ,
        **settings.to_env(),
        # A token for this run only; the endpoint belongs to the user "demo".
        "LLM_ENDPOINTS_TOKENS": json.dumps({user_token: {"user": "demo"}}),
    }

    _step(f"Planning {MODEL} (llm-endpoints plan)")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "automation.cli",
            "plan",
            MODEL,
            "--instance",
            "g5.xlarge",
            "--max-model-len",
            "8192",
        ],
        check=True,
        cwd=REPO_ROOT,
        env=env,
    )

    _step(f"Starting the API on 127.0.0.1 (state in {settings.state_dir})")
    headers = {"Authorization": f"Bearer {user_token}"}
    with (
        local_server(env, startup_timeout_s=STARTUP_TIMEOUT_S) as base,
        httpx.Client(base_url=base, headers=headers, timeout=30) as client,
    ):
        print(f"    listening on {base}")
        existing = client.get(f"/v1/endpoints/{NAME}")
        if existing.status_code == 200 and existing.json()["status"] != "destroyed":
            _step(f"Endpoint {NAME!r} already exists; showing it")
        else:
            _step(f"POST /v1/endpoints {json.dumps(REQUEST)}")
            created = client.post("/v1/endpoints", json=REQUEST)
            print(f"    {created.status_code} {created.text}")
            if created.status_code != 202:
                return 1
            op_id = created.json()["operation"]["id"]
            _step(f"Following operation {op_id}")
            status = _follow(client, op_id)
            if status != "succeeded":
                print(f"error: the create operation ended {status}", file=sys.stderr)
                return 1
        shown = client.get(f"/v1/endpoints/{NAME}").json()
        _step(f"GET /v1/endpoints/{NAME}")
        print(
            json.dumps(
                {
                    k: shown.get(k)
                    for k in (
                        "name",
                        "status",
                        "url",
                        "model",
                        "instance_type",
                        "cost_per_hour",
                        "expires_at",
                    )
                },
                indent=2,
            )
        )
        if shown.get("status") != "ready":
            return 1

    rendered = settings.render_base / NAME
    _step(f"Rendered manifests in {rendered}")
    for f in sorted(Path(rendered).rglob("*.yaml")):
        print(f"    {f.relative_to(rendered)}")
    print(f"\nDestroy it with: .venv/bin/llm-endpoints destroy {NAME}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run())
