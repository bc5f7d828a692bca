"""Domain services: plain functions over a SQLAlchemy session.

Nothing in this package imports Flask. Each operation takes a session, flushes
or executes what it needs, and leaves the commit to its caller (a view, a CLI
command or a job) through ``webapp.transaction.unit_of_work``.
"""
