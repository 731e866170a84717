"""Who may do what through the API: :func:`authorize`, the one function
every operation goes through (deny by default).

Every operation of the app declares its scope with :func:`require`; the app
refuses to build when one does not (:func:`check_every_operation_guarded`),
so a new endpoint cannot be served unguarded by mistake. A token is
authenticated (:func:`ketter.access.policy.authenticate`), then the grant
decides: the scope must be granted and, for an action on a route, the route
inside the token's globs. Failed authentications are counted per client
address and answered 429 past the limit; each failure and each denial is an
audit event in the chain (who, from where, what, why), and so is each
mutating call that was allowed (:func:`record_call`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.routing import APIRoute

from ketter.access.limiter import FailedAuthLimiter
from ketter.access.policy import Grant, Unauthenticated, authenticate, bearer_token
from ketter.api.problems import Problem
from ketter.api.session import Session, session
from ketter.audit.chain import Principal
from ketter.store.rows import ApiTokenRow

#: The attribute :func:`require` marks its dependencies with.
SCOPE_MARK = "__ketter_scope__"


@dataclass(frozen=True)
class Caller:
    """An authenticated, authorised request: the token's grant and where the
    request came from."""

    grant: Grant
    scope: str
    client: str
    method: str
    path: str

    @property
    def principal(self) -> Principal:
        return self.grant.principal

    def visible(self, route: str) -> bool:
        """Whether lists show ``route``'s jobs and state to this caller."""
        return self.grant.visible(route)


def _client(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def _details(request: Request, scope: str, **more: Any) -> dict[str, Any]:
    return {
        "client_ip": _client(request),
        "http_method": request.method,
        "url_path": request.url.path,
        "scope": scope,
        **more,
    }


@dataclass
class Decision:
    """What :func:`decide` found: the caller or the refusal, and the writes
    it asks for (the token's last-use stamp, the audit event of a refusal),
    carried out by :func:`carry_out` before the answer leaves."""

    caller: Caller | None = None
    problem: Problem | None = None
    writes: list[Callable[[Session], object]] = field(default_factory=list)

    def outcome(self) -> Caller:
        """The caller, or the refusal raised."""
        if self.problem is not None:
            raise self.problem
        assert self.caller is not None
        return self.caller


def decide(request: Request, scope: str, route: str | None = None) -> Decision:
    """Whether the token of ``request`` grants ``scope`` (on ``route`` when
    given); only reads (the token, by its hash, on a read connection).

    The refusals: :class:`Problem` 401 (no valid token), 403 (not allowed)
    or 429 (too many failed authentications from this address), each but
    the 429 with its audit event among the writes. The rules are the
    grant's (:meth:`ketter.access.policy.Grant.permits`): nothing is
    allowed that the token does not name."""
    limiter: FailedAuthLimiter = request.app.state.limiter
    client = _client(request)
    now = time.time()
    wait = limiter.retry_after(client, now)
    if wait is not None:
        # Not recorded: the failures that led here were, one by one, and an
        # attacker must not be able to grow the chain at line rate.
        return Decision(
            problem=Problem(
                429,
                "too many failed authentications from this address; try again later",
                headers={"Retry-After": str(wait)},
            )
        )
    presented = bearer_token(request.headers.get("authorization"))
    decision = Decision()
    tokens = _Tokens(decision)
    try:
        with request.app.state.reads.lend() as read:
            tokens.read = read
            grant = authenticate(tokens, presented, now=now)
    except Unauthenticated as exc:
        limiter.failed(client, now)
        details = _details(request, scope, reason=exc.reason, token=exc.token)
        decision.writes.append(lambda s: _append(s, "api_auth_failed", None, now, details))
        decision.problem = Problem(
            401,
            "a valid API token is required (Authorization: Bearer <token>); "
            "the token given is missing, unknown, expired or revoked",
            headers={"WWW-Authenticate": 'Bearer realm="ketter"'},
        )
        return decision
    if not grant.permits(scope, route):
        why = (
            f"token {grant.token!r} does not grant {scope}"
            if not grant.permits(scope)
            else f"token {grant.token!r} does not cover route {route!r}"
        )
        details = _details(request, scope, reason=why, route=route)
        decision.writes.append(lambda s: _append(s, "api_denied", grant, now, details))
        decision.problem = Problem(403, why)
        return decision
    decision.caller = Caller(grant, scope, client, request.method, request.url.path)
    return decision


def carry_out(request: Request, decision: Decision) -> Caller:
    """The writes ``decision`` asks for, then its outcome (in a handler
    thread: the writes go through the job store)."""
    if decision.writes:
        with session(request) as s:
            for write in decision.writes:
                write(s)
    return decision.outcome()


def authorize(request: Request, scope: str, route: str | None = None) -> Caller:
    """The caller of ``request`` if its token grants ``scope`` (on ``route``
    when given), else the refusal (:func:`decide`) raised once its audit
    event is written. For a handler thread; the guard of every operation is
    :func:`require`'s, which decides on the event loop."""
    return carry_out(request, decide(request, scope, route))


class _Tokens:
    """Token lookups on a read connection; the last-use stamp (due at most
    once a minute) left to the decision's writes."""

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        self.read: Any = None

    def api_token_by_hash(self, secret_sha256: str) -> ApiTokenRow | None:
        row: ApiTokenRow | None = self.read.api_token_by_hash(secret_sha256)
        return row

    def touch_api_token(self, token_id: int, *, now: float) -> bool:
        self.decision.writes.append(lambda s: s.store.touch_api_token(token_id, now=now))
        return True


def authorize_route(request: Request, caller: Caller, route: str) -> None:
    """:func:`authorize` again for an action on ``route``, known only once the
    request is read (a job's route, a submitted route)."""
    if not caller.grant.permits(caller.scope, route):
        authorize(request, caller.scope, route)


def require(scope: str) -> Any:
    """The dependency that guards an operation with ``scope``."""

    async def guard(request: Request) -> Caller:
        # Decided on the event loop: a token found by its hash on a warm
        # read connection takes microseconds, and a thread hop per request
        # cost more than the rest of the guard. Only a decision with writes
        # (a refusal's audit event, the last-use stamp once a minute) goes
        # to a handler thread, as every write of the API does.
        decision = decide(request, scope)
        if decision.writes:
            return await anyio.to_thread.run_sync(carry_out, request, decision)
        return decision.outcome()

    setattr(guard, SCOPE_MARK, scope)
    return Depends(guard)


def record_call(
    s: Session, caller: Caller, *, status: int, now: float, route: str | None = None, **what: Any
) -> None:
    """The audit event of a mutating call that was allowed (its outcome in
    ``status``), appended in the caller's transaction when there is one."""
    details = {
        "client_ip": caller.client,
        "http_method": caller.method,
        "url_path": caller.path,
        "scope": caller.scope,
        "status": status,
        **what,
    }
    with s.store.transaction():
        s.store.append_event(
            "api_call", now=now, route=route, details=details, actor=caller.principal
        )


def _append(
    s: Session, event: str, grant: Grant | None, now: float, details: dict[str, Any]
) -> None:
    actor = grant.principal if grant else Principal("anonymous", details["client_ip"])
    with s.store.transaction():
        s.store.append_event(
            event, now=now, route=details.get("route"), details=details, actor=actor
        )


@dataclass(frozen=True)
class Operation:
    """One operation of the app: its method, full path and scope."""

    method: str
    path: str
    scope: str | None


def operations(routers: Iterable[tuple[str, APIRouter]]) -> list[Operation]:
    """Every operation of ``routers`` (each with the prefix it is included
    under), with the scope its :func:`require` names (``None``: unguarded)."""
    found = []
    for prefix, router in routers:
        for route in router.routes:
            if not isinstance(route, APIRoute):
                continue
            marks = {
                getattr(d.call, SCOPE_MARK) for d in _calls(route) if hasattr(d.call, SCOPE_MARK)
            }
            scope = marks.pop() if len(marks) == 1 else None
            for method in sorted(route.methods or ()):
                found.append(Operation(method, prefix + route.path, scope))
    return found


def check_every_operation_guarded(ops: Iterable[Operation]) -> None:
    """Refuse to build an app one of whose operations is not guarded by
    exactly one :func:`require` (deny by default)."""
    for op in ops:
        if op.scope is None:
            raise RuntimeError(
                f"API operation {op.method} {op.path} is not guarded by one require(scope)"
            )


def _calls(route: APIRoute) -> list[Any]:
    found: list[Any] = []
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        found.append(dep)
        stack.extend(dep.dependencies)
    return found
