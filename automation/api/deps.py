"""Dependencies of the routes: the application context and the caller.

Bearer tokens come from a file (YAML or JSON, ``token: {user: alice, admin:
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from automation.settings import Settings
from automation.store import Endpoint, Store
from automation.worker import Dispatcher

MIN_TOKEN_LENGTH = 16

#: Checks a spec before anything is recorded; raises ValueError with the numbers.
Planner = Callable[[Any], Any]


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    user: str
    admin: bool = False

    def can_see(self, owner: str) -> bool:
        """Users see their own endpoints; admins see all."""
        return self.admin or owner == self.user


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


@dataclass
class AppContext:
    """What the routes share (one per app)."""

    settings: Settings
    store: Store
    tokens: TokenRegistry
    dispatcher: Dispatcher | None
    planner: Planner | None


def get_ctx(request: Request) -> AppContext:
    """The application context."""
    ctx: AppContext = request.app.state.ctx
    return ctx


_bearer = HTTPBearer(auto_error=False, description="API token (see LLM_ENDPOINTS_TOKENS_FILE)")


def get_principal(
    ctx: Annotated[AppContext, Depends(get_ctx)],
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, from ``Authorization: Bearer <token>``; 401 otherwise."""
    principal = None
    if creds is not None and creds.scheme.lower() == "bearer" and creds.credentials:
        principal = ctx.tokens.lookup(creds.credentials)
    if principal is None:
        raise HTTPException(
            status_code=401,
            detail="missing or unknown bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


def visible_endpoint(ctx: AppContext, principal: Principal, name: str) -> Endpoint:
    """The endpoint if the caller may see it; 404 alike for missing and foreign."""
    ep = ctx.store.find_endpoint(name)
    if ep is None or not principal.can_see(ep.owner):
        raise HTTPException(status_code=404, detail=f"endpoint {name!r} not found")
    return ep


Ctx = Annotated[AppContext, Depends(get_ctx)]
Caller = Annotated[Principal, Depends(get_principal)]
