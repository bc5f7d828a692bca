"""Security headers on every response."""

from __future__ import annotations

from flask import Flask, request

# No inline script and no third-party origin: every script and style is ours,
# served from /static or the dashboard shell's own static folder. Inline style
# attributes are allowed because the dashboard shell and charts set them.
# The one inline handler allowed, by its hash, is Flask-Admin's filter menu
# item `onclick="return false;"`, which keeps its `javascript:` link inert.
FLASK_ADMIN_FILTER_HANDLER_HASH = "'sha256-2rvfFrggTCtyF5WOiTri1gDS8Boibj4Njn0e+VCBmDI='"
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        f"script-src 'self' 'unsafe-hashes' {FLASK_ADMIN_FILTER_HANDLER_HASH}",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


def init_app(app: Flask) -> None:
    @app.after_request
    def add_security_headers(response):
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if request.is_secure:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
        return response
