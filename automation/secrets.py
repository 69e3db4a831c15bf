"""Secrets of the control plane: the drop-box a create's HF token waits in, and scrubbing.

The HF token of a create waits in a 0600 file under ``<state>/secrets/``
(beside the passphrase file, which has the same protection), keyed by the
operation id, and is deleted as soon as the worker has stored it as a Pulumi
secret config value. :class:`Scrubber` removes known secret values (and
anything shaped like an HF token) from every line the control plane shows.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from automation.settings import Settings


def secret_path(settings: Settings, op_id: str) -> Path:
    """Where a create's HF token waits for its worker."""
    return settings.secrets_root / f"{op_id}.hf_token"


def put_secret(settings: Settings, op_id: str, value: str) -> None:
    """Write the token (0600, atomically) for operation ``op_id``."""
    root = settings.secrets_root
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    final = secret_path(settings, op_id)
    tmp = final.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    os.replace(tmp, final)


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
    """Removes known secret values (and anything shaped like an HF token) from text."""

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
        return self.HF_TOKEN_RE.sub("[secret]", text)
