"""Keeping long-lived tables healthy: what to expire and compact (``planning``), doing it
(``maintainer``), when the engine does it (``schedule``), and orphan file cleanup (``orphans``)."""
