"""One worker's machinery: what runs a topology's reactors and agents against a broker.

Start reading at ``worker.py`` (lifecycle, the batch loop), then ``processor.py`` (the
per-record path and its failure table) and ``interpreter.py`` (effects). Beside them: the
commit protocol (``commit.py``), held records (``admission.py``), followed topics
(``followers.py``), state stores and timers (``state.py``, ``timers.py``), backpressure
buffers (``buffer.py``), request/reply (``replies.py``), the members topic
(``members.py``, announced by ``announcer.py``), services living in the worker
(``services.py``), named lifecycle states (``lifecycle.py``), the read-only view
(``view.py``), metrics (``metrics.py``), the crash-loop breaker (``breaker.py``) and outages
(``outage.py``). May import: ``packetflow.core`` and the rest of ``packetflow.engine``
below the client (topology, security, agent contract, codec, transport, clock, names).
"""
