"""Secrets of the control plane: the HF token drop-box, endpoint API keys, scrubbing.

* The HF token of a create waits in a 0600 file under ``<state>/secrets/``
  (beside the passphrase file, which has the same protection), keyed by the
  operation id, and is deleted as soon as the worker has stored it as a Pulumi
  secret config value.
* Each endpoint's API key is derived, never stored: an HMAC of the endpoint's
  name, generation and key version under the server's master key (a 0600 file
  beside the passphrase file). The worker hands it to the program as a Pulumi secret;
  the owner's key call derives it again. A reused name (a new generation) and
  a rotation (a new version) get new keys.
* :class:`Scrubber` removes known secret values (and anything shaped like an HF
  token or an endpoint key) from every line the control plane shows.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path

from automation.settings import Settings

#: Endpoint API keys look like this (``llme-`` and 48 hex digits).
API_KEY_PREFIX = "llme-"
API_KEY_RE = re.compile(r"\bllme-[0-9a-f]{48}\b")
_MASTER_KEY_FILE = "api-keys.master"


def _write_private(path: Path, value: str) -> None:
    """Write ``value`` to ``path`` (0600, atomically) in a 0700 folder."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    os.replace(tmp, path)


def _master_key(settings: Settings) -> bytes:
    # Beside the passphrase file, not in the drop-box (which empties itself).
    path = settings.state_dir / _MASTER_KEY_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    # First use: create it; if another process raced us, keep theirs.
    fresh = settings.state_dir / f"{_MASTER_KEY_FILE}.{os.getpid()}"
    _write_private(fresh, secrets.token_hex(32))
    try:
        os.link(fresh, path)
    except FileExistsError:
        pass
    finally:
        fresh.unlink(missing_ok=True)
    return bytes.fromhex(path.read_text().strip())


def api_key_for(settings: Settings, name: str, generation: int, version: int) -> str:
    """The API key of one endpoint generation at one key version."""
    message = f"{name}\0{generation}\0{version}".encode()
    digest = hmac.new(_master_key(settings), message, hashlib.sha256).hexdigest()
    return API_KEY_PREFIX + digest[:48]


def secret_path(settings: Settings, op_id: str) -> Path:
    """Where a create's HF token waits for its worker."""
    return settings.secrets_root / f"{op_id}.hf_token"


def put_secret(settings: Settings, op_id: str, value: str) -> None:
    """Write the token (0600, atomically) for operation ``op_id``."""
    _write_private(secret_path(settings, op_id), value)


def read_secret(settings: Settings, op_id: str) -> str | None:
    """The token waiting for ``op_id``, if any."""
    try:
        return secret_path(settings, op_id).read_text()
    except OSError:
        return None


def discard_secret(settings: Settings, op_id: str) -> None:
    """Delete the token of ``op_id``."""
    secret_path(settings, op_id).unlink(missing_ok=True)


class Scrubber:
    """Removes known secret values (and anything shaped like an HF token or an
    endpoint key) from text."""

    HF_TOKEN_RE = re.compile(r"\bhf_[A-Za-z0-9]{8,}\b")

    def __init__(self, secrets: Sequence[str | None] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def add(self, secret: str | None) -> None:
        """Also scrub ``secret``."""
        if secret and len(secret) >= 4 and secret not in self.secrets:
            self.secrets = sorted([*self.secrets, secret], key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "[secret]")
        return API_KEY_RE.sub("[secret]", self.HF_TOKEN_RE.sub("[secret]", text))
