"""Bearer tokens: who a request comes from.

Tokens come from a file (YAML or JSON, ``token: {user: alice, admin:
false}``) named by ``LLM_ENDPOINTS_TOKENS_FILE`` and/or the same map inline in
``LLM_ENDPOINTS_TOKENS``. The file is re-read when it changes, so tokens can be
rotated without a restart. Only SHA-256 digests are kept in memory, and every
presented token is compared with every known digest through
``hmac.compare_digest`` (no early exit), so timing says nothing about which
token was close.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from pathlib import Path

import yaml

from automation.settings import Settings
from automation.usecases import Principal

MIN_TOKEN_LENGTH = 16


def parse_tokens(text: str, source: str) -> dict[bytes, Principal]:
    """``{token: {user, admin}}`` (YAML or JSON) to ``{sha256(token): Principal}``.

    Raises:
        ValueError: naming the source and the bad entry (never the token itself).
    """
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a map of token -> {{user, admin}}")
    out: dict[bytes, Principal] = {}
    for i, (token, entry) in enumerate(data.items(), 1):
        if not isinstance(token, str) or len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(f"{source}: token #{i} is shorter than {MIN_TOKEN_LENGTH} characters")
        if isinstance(entry, str):
            entry = {"user": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("user"), str):
            raise ValueError(f"{source}: token #{i} needs a 'user'")
        extra = set(entry) - {"user", "admin"}
        if extra:
            raise ValueError(f"{source}: token #{i} has unknown keys {sorted(extra)}")
        out[hashlib.sha256(token.encode()).digest()] = Principal(
            user=entry["user"], admin=bool(entry.get("admin", False))
        )
    return out


class TokenRegistry:
    """Known bearer tokens (file + inline), reloaded when the file changes."""

    def __init__(self, settings: Settings) -> None:
        self.file: Path | None = settings.tokens_file
        self.inline = (
            parse_tokens(settings.tokens_inline, "LLM_ENDPOINTS_TOKENS")
            if (settings.tokens_inline)
            else {}
        )
        self._from_file: dict[bytes, Principal] = {}
        self._mtime: float | None = None
        self._lock = threading.Lock()
        self._reload()

    def _reload(self) -> None:
        if self.file is None:
            return
        try:
            mtime = self.file.stat().st_mtime
        except OSError:
            self._from_file, self._mtime = {}, None
            return
        if mtime != self._mtime:
            self._from_file = parse_tokens(self.file.read_text(), str(self.file))
            self._mtime = mtime

    def __len__(self) -> int:
        return len(self.inline) + len(self._from_file)

    def lookup(self, token: str) -> Principal | None:
        """The principal of a token, or None."""
        with self._lock:
            self._reload()
            known = [*self.inline.items(), *self._from_file.items()]
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        found: Principal | None = None
        for candidate, principal in known:
            if hmac.compare_digest(candidate, digest):
                found = principal
        return found
