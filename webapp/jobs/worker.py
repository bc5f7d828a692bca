"""The queue's entry point for separate consumers: ``huey_consumer webapp.jobs.worker.huey``."""

from webapp import create_app

app = create_app()
huey = app.extensions["huey"]
