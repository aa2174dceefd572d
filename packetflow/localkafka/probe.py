"""Whether a node serves: TCP checks of its ports, and a metadata request through aiokafka
(as the ``admin`` SCRAM user of a secure broker) that reports the live brokers. The only
module speaking Kafka's protocol; aiokafka is imported when a probe runs, not before."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from packetflow.localkafka.layout import ADMIN_USER, HOST, SCRAM_MECHANISMS, Layout, tls_dir
from packetflow.localkafka.security import read_credentials

_T = TypeVar("_T")


def port_accepts(port: int, timeout: float = 1.0) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:*port*."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_bindable(port: int) -> bool:
    """True if 127.0.0.1:*port* can be bound (i.e. nobody is listening on it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def probe_config(layout: Layout) -> dict[str, Any]:
    """aiokafka settings the readiness probe needs: SASL_SSL as ``admin`` when secure."""
    if not layout.secure:
        return {}
    credentials = read_credentials(layout.rdir) or {}
    return _sasl_ssl_config(
        tls_dir(layout.rdir) / "ca.pem", ADMIN_USER, credentials.get(ADMIN_USER, "")
    )


def _sasl_ssl_config(ca_file: Path, username: str, password: str) -> dict[str, Any]:
    """aiokafka client settings for a secure broker (SCRAM-SHA-256 over TLS)."""
    from aiokafka.helpers import create_ssl_context

    return {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": SCRAM_MECHANISMS[0],
        "sasl_plain_username": username,
        "sasl_plain_password": password,
        "ssl_context": create_ssl_context(cafile=str(ca_file)),
    }


def probe_brokers(
    bootstrap: str, client: Mapping[str, Any], timeout_ms: int = 5000
) -> frozenset[int]:
    """Node ids of the live brokers a metadata request via *bootstrap* reports (empty if
    nobody answers); *client* holds extra aiokafka settings, e.g. SASL_SSL."""

    async def probe() -> frozenset[int]:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=timeout_ms,
            client_id="packetflow-localkafka-probe",
            **client,
        )
        try:
            await asyncio.wait_for(admin.start(), timeout_ms / 1000)
            cluster = await asyncio.wait_for(admin.describe_cluster(), timeout_ms / 1000)
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
        return frozenset(int(b["node_id"]) for b in cluster.get("brokers") or ())

    return _run_in_thread(lambda: asyncio.run(probe()), frozenset())


def _run_in_thread(fn: Callable[[], _T], default: _T) -> _T:
    """Run *fn* in a fresh thread (safe even when the caller has a running event loop);
    *default* if it raises or takes over 30 s."""
    result: list[_T] = []

    def target() -> None:
        try:
            result.append(fn())
        except Exception:
            result.append(default)

    thread = threading.Thread(target=target, name="localkafka-probe", daemon=True)
    thread.start()
    thread.join(30.0)
    return result[0] if result else default
