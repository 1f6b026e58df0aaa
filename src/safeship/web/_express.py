"""The express lane of `protect`: a request every guard passes goes straight to the app.

`protect` stacks its guards (metrics endpoint, health probes, CSRF origin check, body
size limit, API-key auth) as layers. Most requests pass every one of them, and each
layer would only hand them on. `ExpressLane` asks each guard its own decision
(``guard.passes(scope)``: pure, no I/O, nothing counted, the same function the layer
itself acts on) and, when all of them pass the request, calls the app without the
layers in between. Any other request goes through the layers, which answer it (probes,
401, 413...) as they do on their own. The lane decides nothing by itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from safeship.web._asgi import ASGIApp, Receive, Scope, Send
from safeship.web._clients import ClientAddresses

#: A guard's own decision: whether its layer hands ``scope`` to the app untouched.
Passes = Callable[[Scope], bool]


class ExpressLane:
    """Settle the client address, then send an HTTP request that every one of ``checks``
    passes to ``app``, and any other request to ``guards`` (the outermost guard layer,
    which leads to ``app`` too)."""

    __slots__ = ("addresses", "app", "checks", "guards")

    def __init__(
        self,
        guards: ASGIApp,
        app: ASGIApp,
        checks: Iterable[Passes],
        addresses: ClientAddresses,
    ) -> None:
        self.guards = guards
        self.app = app
        self.checks = tuple(checks)
        self.addresses = addresses

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain function returning the layer's awaitable: no coroutine of its own.
        kind = scope["type"]
        if kind == "http":
            self.addresses.settle(scope)  # every layer, the access log and the app agree
            for passes in self.checks:
                if not passes(scope):
                    return self.guards(scope, receive, send)
            return self.app(scope, receive, send)
        if kind == "websocket":
            self.addresses.settle(scope)
        return self.guards(scope, receive, send)
