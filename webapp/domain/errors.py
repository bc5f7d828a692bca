"""The errors every entrypoint maps: to HTTP statuses, flashes or exit codes."""


class DomainError(Exception):
    """Base of every error the domain raises on purpose."""


class Invalid(DomainError):
    """The input is malformed or breaks a rule; nothing was written."""


class NotFound(DomainError):
    """A referenced record does not exist."""


class Conflict(DomainError):
    """The operation clashes with the current state (or a concurrent change)."""


class Forbidden(DomainError):
    """The actor may not do this."""
