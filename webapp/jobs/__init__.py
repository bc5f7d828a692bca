"""Procedures that span several transactions, run from the CLI and the job queue."""
