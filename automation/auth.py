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
import logging
import re
import threading
from pathlib import Path

import yaml

from automation.settings import Settings
from automation.store import Quota
from automation.usecases import Principal

log = logging.getLogger("llm_endpoints.auth")

MIN_TOKEN_LENGTH = 16
MAX_TOKEN_LENGTH = 512
#: A user name: what records and logs show as owner and requester.
USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
#: Names the control plane itself uses for what it does (teardown's destroys,
#: the CLI); a token naming one could read or cancel those operations.
RESERVED_USERS = frozenset({"teardown", "system", "cli"})
_QUOTA_KEYS = ("endpoints", "accelerators", "cost_per_hour", "queued")


def _quota(value: object, where: str) -> Quota:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: 'quota' must be a map of {', '.join(_QUOTA_KEYS)}")
    unknown = set(value) - set(_QUOTA_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown quota keys {sorted(unknown)} (valid: {_QUOTA_KEYS})")
    for key, limit in value.items():
        if isinstance(limit, bool) or not isinstance(limit, int | float) or limit < 0:
            raise ValueError(f"{where}: quota.{key} must be a number >= 0, got {limit!r}")
    return Quota(**value)


def parse_tokens(text: str, source: str) -> dict[bytes, Principal]:
    """``{token: {user, admin, quota}}`` (YAML or JSON) to ``{sha256(token): Principal}``.

    Strict: ``admin`` must be a real boolean (``"false"`` is refused, not read
    as true), unknown keys are refused, user names follow :data:`USER_RE` and
    may not be one of :data:`RESERVED_USERS`.

    Raises:
        ValueError: naming the source and the bad entry (never the token itself).
    """
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a map of token -> {{user, admin}}")
    out: dict[bytes, Principal] = {}
    for i, (token, entry) in enumerate(data.items(), 1):
        where = f"{source}: token #{i}"
        if not isinstance(token, str) or not MIN_TOKEN_LENGTH <= len(token) <= MAX_TOKEN_LENGTH:
            raise ValueError(
                f"{where} is shorter than {MIN_TOKEN_LENGTH} or longer than "
                f"{MAX_TOKEN_LENGTH} characters"
            )
        if isinstance(entry, str):
            entry = {"user": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("user"), str):
            raise ValueError(f"{where} needs a 'user'")
        extra = set(entry) - {"user", "admin", "quota"}
        if extra:
            raise ValueError(f"{where} has unknown keys {sorted(extra)}")
        user = entry["user"]
        if not USER_RE.match(user):
            raise ValueError(f"{where}: user {user!r} must match {USER_RE.pattern}")
        if user.lower() in RESERVED_USERS:
            raise ValueError(f"{where}: user {user!r} is reserved for the control plane itself")
        admin = entry.get("admin", False)
        if not isinstance(admin, bool):
            raise ValueError(f"{where}: 'admin' must be true or false, got {admin!r}")
        quota = _quota(entry["quota"], where) if "quota" in entry else None
        out[hashlib.sha256(token.encode()).digest()] = Principal(
            user=user, admin=admin, quota=quota
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
            try:
                self._from_file = parse_tokens(self.file.read_text(), str(self.file))
            except (OSError, ValueError, yaml.YAMLError) as e:
                if self._mtime is None:
                    raise  # at start-up: refuse to run with a broken tokens file
                # A bad edit of a running server's file: keep the tokens it had.
                log.error("tokens file not reloaded, keeping the previous tokens: %s", e)
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
