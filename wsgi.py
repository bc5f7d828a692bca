"""The WSGI server's entry point."""

from webapp import create_app

app = create_app()
