"""The engine: what runs a topology on a broker, and the contracts substrates plug into.

Four wings and the declaration pieces beside them, each layer importing only those below it
(``make lint`` checks):

- ``testing.py`` (TestDriver) over ``client.py`` (publish, read, ask);
- ``runtime/`` (one worker's machinery), ``describe.py`` (a topology as data) and
  ``ingress.py`` (untrusted JSON and a token made into an intent and its context);
- ``topology.py``: the declaration, pure data (no I/O);
- ``security/`` (the guard, seals, revocations, audit) and ``repartition.py``;
- ``agent.py`` (THE plug-in contract: specs, runtimes, the services they get, as protocols)
  and ``codec.py`` (the wire format);
- ``transport/`` (the broker contract, kafka:// and memory://);
- ``clock.py``, ``names.py`` (topic names), ``paths.py``.

Start reading at ``agent.py`` to add a substrate (``packetflow.streams`` is the worked
example), at ``runtime/worker.py`` for how a batch runs. May import: ``packetflow.core``.
Nothing here is public API except what ``packetflow`` re-exports.
"""
