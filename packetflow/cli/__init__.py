"""The ``packetflow`` command (an interface: the top layer).

``app.py`` (worker, send, topology show, demo), ``operate.py`` (tail, set-aside, replay),
``caps.py`` (keys, tokens, revocation), ``errors.py`` (the one-line user error),
``kafka.py`` (the local broker, from ``packetflow.localkafka``), ``options.py`` (options the
commands share), ``render.py`` (a topology as text or a mermaid graph), ``loader.py``
(finding a topology in a module), ``demo.py`` and ``watchdog.py``. User errors print one
line and exit 2. May import: every layer below (engine, core, substrates, localkafka).
"""
