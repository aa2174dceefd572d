"""The engine: what runs a topology on a broker, and the contracts substrates plug into.

Four wings and the declaration pieces beside them, each layer importing only those below it
(``make lint`` checks):

- ``testing.py`` (TestDriver) and ``inspect.py`` (a record as an operator may see it) over
  ``client.py`` (publish, read, ask, tail, replay);
- ``runtime/`` (one worker's machinery), ``describe.py`` (a topology as data),
  ``ingress.py`` (untrusted JSON and a token made into an intent and its context) and
  ``replay.py`` (which set-aside records to publish again, and as what);
- ``topology.py``: the declaration, pure data (no I/O);
- ``security/`` (the guard, seals, revocations, audit), ``repartition.py`` and
  ``setaside.py`` (why and from where a record was set aside);
- ``agent.py`` (THE plug-in contract: specs, runtimes, the services they get, as protocols)
  and ``codec.py`` (the wire format);
- ``transport/`` (the broker contract, kafka:// and memory://);
- ``clock.py``, ``names.py`` (topic names), ``paths.py``.

Start reading at ``agent.py`` to add a substrate (``packetflow.streams`` is the worked
example), at ``runtime/worker.py`` for how a batch runs. May import: ``packetflow.core``.
Nothing here is public API except what ``packetflow`` re-exports.
"""
