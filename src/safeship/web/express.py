"""The express lane of `protect`: one look at a request that tells whether every guard
would hand it to the app untouched.

`protect` stacks its guards (metrics endpoint, API-key auth, CSRF origin check, body
size limit, health probes) as layers, each of which reads the request on its own. Most
requests pass every one of them. `ExpressLane.look` finds that out in one pass over the
request headers, without I/O and without counting anything, so `ProtectedApp` can send
such a request straight to the app. Any request a guard might act on goes through the
layers, which answer it as they do on their own. Tests hold both ways to the same
answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from safeship.web._asgi import ASGIApp, Scope
from safeship.web.auth import ApiKeyAuth
from safeship.web.clients import PROXY_HEADER_KEYS, UNKNOWN, ClientAddresses
from safeship.web.csrf import SAFE_METHODS, OriginCheckMiddleware
from safeship.web.endpoints import HealthEndpoints, MetricsEndpoint
from safeship.web.keys import DigestSet, presented_key
from safeship.web.limiter import MemoryFailureStore, Verdict
from safeship.web.limits import BodySizeLimitMiddleware
from safeship.web.request_id import RequestIdMiddleware

# The request headers the guards read, by the slot `look` keeps each in.
_REQUEST_ID, _CONTENT_LENGTH, _TRANSFER_ENCODING, _API_KEY, _AUTHORIZATION, _PROXY = range(6)
_HTTP1 = ("1.0", "1.1")


class _AuthCheck:
    """What `ApiKeyAuth.passes` reads, taken from the layer once."""

    __slots__ = ("bases", "check_now", "clients", "digests", "everything", "header", "starts")

    def __init__(self, auth: ApiKeyAuth) -> None:
        self.everything, self.bases, self.starts = auth.protects.parts
        store = auth.store
        # Only counts kept in memory can be read without I/O; any other store: layers.
        self.clients = store.known_clients if type(store) is MemoryFailureStore else None
        self.check_now: Callable[[str], Verdict] | None = (
            store.check_now if type(store) is MemoryFailureStore else None
        )
        self.digests: DigestSet = auth.digests
        self.header = auth.header_key


class ExpressLane:
    """The guards of one `protect` stack, read as one check (see the module)."""

    __slots__ = ("addresses", "app", "auth", "csrf", "layered_paths", "max_body_bytes", "slots")

    def __init__(
        self,
        app: ASGIApp,
        slots: dict[bytes, int],
        *,
        layered_paths: frozenset[str],
        max_body_bytes: int | None,
        csrf: Callable[[Scope], bool] | None,
        auth: _AuthCheck | None,
        addresses: ClientAddresses,
    ) -> None:
        self.app = app
        self.addresses = addresses
        self.slots = slots
        self.layered_paths = layered_paths
        self.max_body_bytes = max_body_bytes
        self.csrf = csrf
        self.auth = auth

    @classmethod
    def build(
        cls,
        app: ASGIApp,
        layers: Iterable[object],
        request_ids: RequestIdMiddleware,
        addresses: ClientAddresses | None = None,
    ) -> ExpressLane | None:
        """The lane past ``layers`` (the guards between `ProtectedApp` and ``app``), or
        None when one of them is of a kind the lane does not know. ``addresses`` settles
        the client of a request that carries a proxy header, as `ProtectedApp` does."""
        addresses = addresses or ClientAddresses()
        slots: dict[bytes, int] = dict.fromkeys(PROXY_HEADER_KEYS, _PROXY)
        layered: set[str] = set()
        max_body_bytes = None
        csrf = None
        auth = None
        for layer in layers:
            if isinstance(layer, MetricsEndpoint):
                layered.add(layer.path)
            elif isinstance(layer, HealthEndpoints):
                layered.update(layer.by_path)
            elif isinstance(layer, BodySizeLimitMiddleware):
                max_body_bytes = layer.max_body_bytes
                slots[b"content-length"] = _CONTENT_LENGTH
                slots[b"transfer-encoding"] = _TRANSFER_ENCODING
            elif isinstance(layer, OriginCheckMiddleware):
                csrf = layer.passes
            elif isinstance(layer, ApiKeyAuth):
                if layer.clients.proxies != addresses.proxies or layer.clients.header != (
                    addresses.header
                ):
                    return None  # two views of the client: leave it to the layers
                if layer.header_key in slots or layer.header_key == b"authorization":
                    return None  # one header read two ways: leave it to the layer
                slots[layer.header_key] = _API_KEY
                slots[b"authorization"] = _AUTHORIZATION
                auth = _AuthCheck(layer)
            else:
                return None
        if request_ids.trust_incoming:
            if request_ids.header_key in slots:
                return None
            slots[request_ids.header_key] = _REQUEST_ID
        return cls(
            app,
            slots,
            layered_paths=frozenset(layered),
            max_body_bytes=max_body_bytes,
            csrf=csrf,
            auth=auth,
            addresses=addresses,
        )

    def look(self, scope: Scope) -> bytes | None:
        """For an HTTP request every guard would pass untouched: the first value of its
        request-id header (``b""`` without one). None for any other request: it goes
        through the layers.

        No I/O and nothing counted; a request the lane is unsure of goes to the layers.
        A request that carries a proxy header has its client settled on the way
        (`ClientAddresses.settle`, as `ProtectedApp` does for the layers).
        """
        request_id = content_length = api_key = authorization = None
        framed = True
        proxied = False
        slots = self.slots
        try:
            for name, value in scope.get("headers", ()):
                slot = slots.get(name)
                if slot is None:
                    continue
                if slot == _REQUEST_ID:
                    if request_id is None:
                        request_id = value
                elif slot == _CONTENT_LENGTH:
                    if content_length is None:
                        content_length = int(value)
                elif slot == _TRANSFER_ENCODING:
                    framed = False
                elif slot == _API_KEY:
                    if api_key is None:
                        api_key = value
                elif slot == _PROXY:
                    proxied = True
                elif authorization is None:
                    authorization = value
        except (TypeError, ValueError):  # a malformed length, an unhashable name
            return None
        if proxied:
            self.addresses.settle(scope)
        limit = self.max_body_bytes
        if limit is not None and (
            not framed
            or (content_length is not None and content_length > limit)
            or scope.get("http_version") not in _HTTP1
        ):
            return None
        path = scope.get("path", "")
        if path in self.layered_paths:
            return None
        csrf = self.csrf
        if csrf is not None and scope.get("method") not in SAFE_METHODS and not csrf(scope):
            return None
        auth = self.auth
        if (
            auth is not None
            and (auth.everything or path in auth.bases or path.startswith(auth.starts))
            and scope.get("method") != "OPTIONS"
        ):
            if auth.check_now is None or auth.clients is None:
                return None
            client = scope.get("client")  # settled above when anything was forwarded
            ip = str(client[0]) if client else UNKNOWN
            if ip in auth.clients and not auth.check_now(ip).allowed:
                return None
            presented = presented_key(scope.get("headers", ()), auth.header)
            if not presented or not auth.digests.matches(presented):
                return None
        return b"" if request_id is None else bytes(request_id)
