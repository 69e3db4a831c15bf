"""A model's ``config.json`` from the Hugging Face Hub, for a create request that gives none.

The control plane sizes any Hugging Face model from its ``config.json``. A
request that names a model the project does not ship, without ``model_config``,
has it fetched here once (``GET {hf_endpoint}/{model}/resolve/{revision}/config.json``,
with the request's HF token), and the config is recorded in the spec, so the
worker and the planner never go to the Hub for it.

Bounded: :data:`TIMEOUT_S` for each step and for the whole transfer, and
``rules.MODEL_CONFIG_MAX_BYTES`` of body. Every failure is a :class:`HubError`
(a ``ValueError`` naming the field, which the API answers with 422); the token
is never in a message.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from components.rules import MODEL_CONFIG_MAX_BYTES

#: Seconds for each of connect, read and write, and for the whole transfer.
TIMEOUT_S = 10.0
#: Redirects followed (the Hub redirects renamed repositories, same host).
MAX_REDIRECTS = 3


class HubError(ValueError):
    """The config could not be fetched; the message names the field and what to do."""


def config_url(endpoint: str, model_id: str, revision: str | None = None) -> str:
    """Where the Hub serves a repository file: ``{endpoint}/{id}/resolve/{rev}/config.json``."""
    return f"{endpoint.rstrip('/')}/{model_id}/resolve/{revision or 'main'}/config.json"


def fetch_config(
    model_id: str,
    *,
    endpoint: str,
    token: str | None = None,
    revision: str | None = None,
    timeout_s: float | None = None,
    max_bytes: int = MODEL_CONFIG_MAX_BYTES,
) -> dict[str, Any]:
    """The model's ``config.json`` as a dict.

    Args:
        model_id: A valid Hugging Face id (``owner/name``; checked by the caller,
            it is part of the URL).
        endpoint: The Hub, or a mirror of its HTTP API (``hf_endpoint``).
        token: Sent as ``Authorization: Bearer`` (gated and private models).
        revision: Branch, tag or commit; None: ``main``.
        timeout_s: Limit of each step and of the whole transfer (None: :data:`TIMEOUT_S`).
        max_bytes: Largest body read.

    Raises:
        HubError: ``model: ...`` for 401/403 (gated or private), 404 (no such
            model or no config.json), another status, or a network failure
            naming ``endpoint``; ``model_config: ...`` for a body too large or
            not a JSON object.
    """
    timeout_s = TIMEOUT_S if timeout_s is None else timeout_s
    url = config_url(endpoint, model_id, revision)
    where = f"{model_id} on {endpoint}"
    # identity: a small file, and no compressed body to inflate past max_bytes.
    headers = {"Accept-Encoding": "identity", "User-Agent": "llm-endpoints"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    deadline = time.monotonic() + timeout_s
    try:
        # httpx drops Authorization on a redirect to another host.
        with (
            httpx.Client(
                timeout=timeout_s, follow_redirects=True, max_redirects=MAX_REDIRECTS
            ) as client,
            client.stream("GET", url, headers=headers) as response,
        ):
            _check_status(response.status_code, where, bool(token))
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise _too_large(where, max_bytes)
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise _too_large(where, max_bytes)
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("the transfer took too long")
    except httpx.TimeoutException:
        raise HubError(
            f"model: fetching the config.json of {where} timed out after {timeout_s:g} s; "
            "pass model_config instead"
        ) from None
    except httpx.HTTPError as e:
        raise HubError(
            f"model: could not fetch the config.json of {model_id} from {endpoint} "
            f"({type(e).__name__}); pass model_config instead"
        ) from None
    try:
        config = json.loads(bytes(body))
    except ValueError:
        raise HubError(f"model_config: the config.json of {where} is not JSON") from None
    if not isinstance(config, dict):
        raise HubError(f"model_config: the config.json of {where} is not a JSON object")
    return config


def _check_status(status: int, where: str, had_token: bool) -> None:
    if status == 200:
        return
    if status in (401, 403):
        if had_token:
            raise HubError(
                f"model: {where} is gated or private, and the hf_token given may not read it "
                "(accept the model's terms on the Hub with that account, or pass model_config)"
            )
        raise HubError(
            f"model: {where} is gated or private: pass hf_token (a Hugging Face token that "
            "may read it), or pass model_config"
        )
    if status == 404:
        raise HubError(
            f"model: {where}: no such model or no config.json (check the id, or pass model_config)"
        )
    raise HubError(
        f"model: the config.json of {where} could not be fetched: HTTP {status}; pass "
        "model_config instead"
    )


def _too_large(where: str, max_bytes: int) -> HubError:
    return HubError(
        f"model_config: the config.json of {where} is larger than {max_bytes} bytes, which "
        "is not a config this server accepts"
    )
