"""Error pages, and domain errors mapped to HTTP statuses.

Under ``/api/`` an error is JSON shaped like the API's own,
``{"error": message, "field": null}``, even when no API route matched (an
unknown URL, a wrong method) and so the API blueprint's handlers never ran.
"""

from __future__ import annotations

from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import MethodNotAllowed

from webapp.domain.errors import Conflict, DomainError, Forbidden, Invalid, NotFound

STATUS_BY_ERROR = {Invalid: 400, Forbidden: 403, NotFound: 404, Conflict: 409}
TITLES = {400: "Bad request", 403: "Forbidden", 404: "Not found", 409: "Conflict", 429: "Too many requests"}
API_PREFIX = "/api/"


def status_for(error: DomainError) -> int:
    for kind, status in STATUS_BY_ERROR.items():
        if isinstance(error, kind):
            return status
    return 500


def _under_api() -> bool:
    return request.path.startswith(API_PREFIX) or request.path == API_PREFIX.rstrip("/")


def _api_error(status: int, message: str, headers: dict[str, str] | None = None):
    response = jsonify(error=message, field=None)
    response.status_code = status
    response.headers.update(headers or {})
    # As on every API response: what an error says may depend on the token.
    response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask) -> None:
    def render(status: int, message: str):
        if _under_api():
            return _api_error(status, message)
        if request.headers.get("HX-Request"):
            return render_template("errors/_error.html", status=status, title=TITLES.get(status, "Error"),
                                   message=message), status
        return render_template("errors/error.html", status=status, title=TITLES.get(status, "Error"),
                               message=message), status

    @app.errorhandler(DomainError)
    def domain_error(error: DomainError):
        return render(status_for(error), str(error))

    for status, default in (
        (403, "You do not have a role that allows this page or action."),
        (429, "Too many attempts. Wait a minute and try again."),
    ):
        app.register_error_handler(status, lambda error, status=status, default=default: render(status, default))

    @app.errorhandler(400)
    def bad_request(error):
        return render(400, getattr(error, "description", None) or "The request could not be understood.")

    @app.errorhandler(404)
    def not_found(error):
        if _under_api():
            # No rule matched: the blueprint's handlers never saw the request.
            unknown = request.url_rule is None
            return _api_error(404, f"there is no API endpoint at {request.path}" if unknown
                              else error.description)
        return render(404, "There is nothing here.")

    @app.errorhandler(MethodNotAllowed)
    def method_not_allowed(error: MethodNotAllowed):
        if not _under_api():
            return error
        allowed = ", ".join(sorted(error.valid_methods or ()))
        return _api_error(
            405, f"{request.method} is not allowed on {request.path}; use {allowed}", {"Allow": allowed}
        )
