"""Error pages, and domain errors mapped to HTTP statuses."""

from __future__ import annotations

from flask import Flask, render_template, request

from webapp.domain.errors import Conflict, DomainError, Forbidden, Invalid, NotFound

STATUS_BY_ERROR = {Invalid: 400, Forbidden: 403, NotFound: 404, Conflict: 409}
TITLES = {400: "Bad request", 403: "Forbidden", 404: "Not found", 409: "Conflict", 429: "Too many requests"}


def status_for(error: DomainError) -> int:
    for kind, status in STATUS_BY_ERROR.items():
        if isinstance(error, kind):
            return status
    return 500


def init_app(app: Flask) -> None:
    def render(status: int, message: str):
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
        (404, "There is nothing here."),
        (429, "Too many attempts. Wait a minute and try again."),
    ):
        app.register_error_handler(status, lambda error, status=status, default=default: render(status, default))

    @app.errorhandler(400)
    def bad_request(error):
        return render(400, getattr(error, "description", None) or "The request could not be understood.")
