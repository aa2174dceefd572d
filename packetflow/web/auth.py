"""Who is asking, and what a refusal means in HTTP.

A request carries its token as ``Authorization: Bearer <token>``, or, from a browser (whose
EventSource cannot send that header), in the HttpOnly session cookie the login form sets.
A request that changes something with the cookie's authority must also carry the CSRF token
(the ``pf_csrf`` cookie, echoed in an ``X-CSRF-Token`` header or a ``csrf`` form field: a
double-submit that another site's page cannot forge). The worker's own guard decides
(:meth:`~packetflow.engine.runtime.view.WorkerView.authorize`): the same reasons as the
denied topic, each mapped to a status here.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse

from packetflow.core.context import Context
from packetflow.core.tokens import (
    BAD_SIGNATURE,
    DELEGATION_WIDENED,
    EXPIRED,
    MALFORMED,
    NOT_YET_VALID,
    REVOKED,
    UNKNOWN_KEY,
)
from packetflow.engine.security.guard import Denial

SESSION_COOKIE = "pf_session"
CSRF_COOKIE = "pf_csrf"
CSRF_HEADER = "x-csrf-token"
# a token that does not hold: the caller must authenticate again (401); the rest is 403
UNAUTHENTICATED = frozenset(
    {BAD_SIGNATURE, UNKNOWN_KEY, EXPIRED, NOT_YET_VALID, REVOKED, MALFORMED, DELEGATION_WIDENED}
)


@dataclass(frozen=True)
class Caller:
    """The token a request carries (None: none) and how it came."""

    token: str | None
    by_cookie: bool = False

    def context(self) -> Context:
        return Context.new(token=self.token) if self.token else Context.new()


def caller(conn: HTTPConnection) -> Caller:
    """The bearer token, else the session cookie's."""
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return Caller(value.strip())
    cookie = conn.cookies.get(SESSION_COOKIE)
    return Caller(cookie, by_cookie=True) if cookie else Caller(None)


def csrf_ok(conn: HTTPConnection, form_value: str | None = None) -> bool:
    """Whether a cookie-authenticated request that changes something carries the CSRF token."""
    expected = conn.cookies.get(CSRF_COOKIE)
    given = conn.headers.get(CSRF_HEADER) or form_value
    return bool(expected and given and hmac.compare_digest(expected, given))


def new_csrf() -> str:
    return secrets.token_urlsafe(24)


def problem(status: int, reason: str, message: str, **extra: object) -> JSONResponse:
    """A refusal as JSON: ``{"reason": ..., "error": ...}`` (the denied topic's words)."""
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = f'Bearer error="invalid_token", error_description="{reason}"'
    body = {"reason": reason, "error": message, **extra}
    return JSONResponse(body, status_code=status, headers=headers)


def refusal(denial: Denial, caller: Caller) -> JSONResponse:
    """401 when there is no token, or it does not hold; 403 when it holds but does not
    cover what is asked (naming what is missing)."""
    if caller.token is None:
        return problem(401, "no-token", denial.message, missing=list(denial.missing))
    status = 401 if denial.reason in UNAUTHENTICATED else 403
    return problem(status, denial.reason, denial.message, missing=list(denial.missing))
