"""The README's Faust bridge, run as written: its Faust app (``legacy_shop.py``) as ``faust
-A legacy_shop worker`` next to a worker of the README's shop, on Kafka. A sale taken the
Faust way reaches the shop's reactor with the app's token and comes back to the app as the
``OrderAccepted`` it caused, in the trace the app started."""

from __future__ import annotations

import asyncio
import importlib
import os
import re
import signal
import sys
import time
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from support.running import running, unique

from packetflow import KeyStore, issue_token

pytestmark = pytest.mark.kafka

README = Path(__file__).resolve().parents[2] / "README.md"
WAIT = 30.0  # upper bound of the whole exchange; a passing test takes a few seconds


def _block(name: str) -> str:
    found = re.search(rf"<!-- readme-test: {re.escape(name)} -->\n```python\n(.*?)```",
                      README.read_text(), re.S)  # fmt: skip
    assert found, f"README has no {name} block"
    return found.group(1)


class Output:
    """A process's output, line by line, awaited until a line says something."""

    def __init__(self, process: asyncio.subprocess.Process, deadline: float) -> None:
        self.process = process
        self.deadline = deadline
        self.lines: list[str] = []

    async def until(self, text: str) -> str:
        assert self.process.stdout is not None
        while (left := self.deadline - time.monotonic()) > 0:
            try:
                raw = await asyncio.wait_for(self.process.stdout.readline(), left)
            except TimeoutError:
                break
            if not raw:
                break  # the process ended
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            if text in line:
                return line
        tail = "\n".join(self.lines[-40:])
        raise AssertionError(f"no line saying {text!r} from faust; its output ends:\n{tail}")


async def test_the_faust_bridge_section_runs_as_written(
    kafka_url: str, kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "shop.py").write_text(_block("shop.py"))
    (tmp_path / "legacy_shop.py").write_text(_block("legacy_shop.py"))
    keys = KeyStore(tmp_path / "keys")  # packetflow caps keygen; caps issue
    token = issue_token("legacy-shop", ["clerk:customer/*"], key=keys.generate(), ttl="1h")
    namespace = unique("readmefaust")
    monkeypatch.setenv("PACKETFLOW_KEYS", str(keys.path))
    monkeypatch.setenv("PACKETFLOW_NAMESPACE", namespace)
    monkeypatch.setenv("PACKETFLOW_BROKER", kafka_url)
    monkeypatch.setenv("SHOP_TOKEN", token)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("shop", None)
    shop = importlib.import_module("shop")
    deadline = time.monotonic() + WAIT
    customer = unique("c")
    try:
        async with running(shop.topology, kafka_url) as pf:  # packetflow worker shop
            faust = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "faust", "-A", "legacy_shop", "worker", "-l", "info",
                "--without-web",
                cwd=tmp_path, env=dict(os.environ), stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            output = Output(faust, deadline)
            try:
                await output.until("Ready")  # faust's worker says so once it runs
                producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
                await producer.start()
                try:  # a sale, as the Faust app's old producers send it
                    sale = {"customer": customer, "amount": 30}
                    await producer.send_and_wait(f"{namespace}.sales", orjson.dumps(sale))
                finally:
                    await producer.stop()
                line = await output.until(f"{customer} spent 30 ")
            finally:
                faust.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(faust.communicate(), 15)
                except TimeoutError:
                    faust.kill()
                    await faust.wait()
            assert pf.state("place_order", customer) == 30
            [order] = [
                r for r in await pf.client.read("orders")
                if r.intent is not None and r.intent.customer == customer
            ]  # fmt: skip
            assert order.header("pf-token") == token
            assert order.context is not None
            assert line.endswith(f"(trace {order.context.trace_id})")
    finally:
        sys.modules.pop("shop", None)
