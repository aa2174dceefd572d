"""What a requester gets back when its request was refused instead of answered.

A request is an intent whose context names a ``reply_to`` topic and a ``requester``. Its
reactor answers with ``reply(...)``; when the engine sets the request aside instead (denied,
dead-lettered), it answers with a :class:`Refused`, so the requester learns at once why,
rather than waiting out its timeout.
"""

from __future__ import annotations

from packetflow.core.intent import Intent


class Refused(Intent, type_name="packetflow.Refused", internal=True):
    """The engine's answer to a request it set aside: the ``pf-reason`` and why."""

    reason: str
    error: str
    source: str  # topic/partition/offset of the request
