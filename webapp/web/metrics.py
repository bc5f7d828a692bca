"""``GET /metrics``: the Prometheus exposition, for the scraper only.

Access
    A request passes with ``Authorization: Bearer <METRICS_TOKEN>`` or from an
    address inside one of the ``METRICS_ALLOW_FROM`` networks (comma-separated
    CIDRs); either is enough. A missing or wrong token gets 401 with
    ``WWW-Authenticate: Bearer``, and so does a request from outside the
    allow-list when a token is configured; with only an allow-list, outsiders
    get 403. With neither configured the endpoint does not exist (404), so a
    deployment never exposes its figures by forgetting a setting.

    No staff sign-in, no cookie, no CSRF (the endpoint only reads), and no rate
    limit: only the scraper gets through, and a scrape is a handful of small
    queries. The address is the one the WSGI server gives; behind a proxy, the
    proxy must pass the client address on (werkzeug's ProxyFix) for the
    allow-list to mean anything.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable

from flask import Blueprint, Flask, Response, abort, current_app, request

from webapp import telemetry
from webapp.extensions import csrf

bp = Blueprint("metrics", __name__)
csrf.exempt(bp)


def init_app(app: Flask) -> None:
    networks(app.config.get("METRICS_ALLOW_FROM"))  # a bad CIDR stops the app at start, not at scrape
    telemetry.init_app(app)
    app.register_blueprint(bp)


def networks(value: str | Iterable[str] | None) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Parse an allow-list of CIDRs (a comma-separated string or a list).

    :raise ValueError: naming the entry that is not a network.
    """
    if not value:
        return []
    entries = value.split(",") if isinstance(value, str) else list(value)
    parsed = []
    for entry in (e.strip() for e in entries):
        if not entry:
            continue
        try:
            parsed.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"METRICS_ALLOW_FROM: {entry!r} is not an address or CIDR network") from None
    return parsed


def _token_matches(expected: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())


def _address_allowed(allowed) -> bool:
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    # A dual-stack server reports IPv4 clients as ::ffff:a.b.c.d.
    mapped = getattr(address, "ipv4_mapped", None)
    return any(address in network or (mapped is not None and mapped in network) for network in allowed)


@bp.get("/metrics")
def metrics():
    token = current_app.config.get("METRICS_TOKEN")
    allowed = networks(current_app.config.get("METRICS_ALLOW_FROM"))
    if not token and not allowed:
        abort(404)
    if not ((token and _token_matches(token)) or (allowed and _address_allowed(allowed))):
        if token:
            return Response("a valid bearer token is required\n", 401, {"WWW-Authenticate": "Bearer"},
                            mimetype="text/plain")
        abort(403)
    body, content_type = telemetry.exposition(current_app._get_current_object(), request.headers.get("Accept"))
    return Response(body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})
