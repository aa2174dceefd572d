"""Bridges to other stream processors, so teams can move to PacketFlow one agent at a time.

``packetflow.interop.faust``: Faust (faust-streaming) apps publish intents to a topology's
topics in PacketFlow's wire format (context and capability token included, checked by the
workers like any record) and consume its topics as typed intents with their context. Needs
the ``faust`` extra (``pip install 'packetflow[faust]'``); importing this package does not.

Lives in the interfaces layer: imports the core model, the engine's declaration and wire
format (``engine.topology``, ``engine.codec``) and observability, never web, mcp or cli.
"""
