"""The pure model: intents, contexts, capabilities, effects, reactor signatures, capability
tokens (``tokens/``) and the engine's own reply intent (``replies.py``). No I/O, no clock of
its own. May import: nothing of ``packetflow`` outside ``core``.
"""
