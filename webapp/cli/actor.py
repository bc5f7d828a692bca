"""Who acts from the command line: no staff account, but the system account that ran the command."""

from __future__ import annotations

import getpass
import socket

from webapp.domain.audit import Actor


def command_line_actor() -> Actor:
    """The actor of a command run on a server, e.g. "command line (alice@ops-1)"."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry, as in some containers
        user = "unknown user"
    return Actor(staff_id=None, via=f"command line ({user}@{socket.gethostname()})")
