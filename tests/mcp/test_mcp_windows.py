"""A window's open windows as an MCP resource: ``state://<window>/<key>`` read with the
caller's ``read:`` capability on the key's resource."""

from __future__ import annotations

import json

import pytest
from mcp.shared.exceptions import MCPError
from support.mcpserved import mcp_client
from support.running import new_topology, running, unique
from support.webshop import KEY, SECRET

from packetflow import Context, Intent, Security, Topology, issue_token
from packetflow.mcp import McpMount
from packetflow.streams import Tumbling, WindowResult, agg, window
from packetflow.web import HttpService


class Reading(Intent, type_name="w.Reading", key="device", requires=["report:device/{device}"]):
    device: str
    celsius: float


def sensors() -> Topology:
    topo = new_topology("mcpwin", security=Security(trusted_keys=[KEY], worker_secret=SECRET))

    @window(topo, Reading, topic=unique("readings"), every=Tumbling(3600),
            aggregate=agg.mean("celsius"))  # fmt: skip
    def hourly(result: WindowResult, ctx: Context) -> None:
        return None

    return topo


async def test_open_windows_are_read_by_key() -> None:
    topo = sensors()
    sensor = issue_token("s1", ["report:device/*"], key=KEY, ttl=3600)
    reader = issue_token("ops", ["read:device/dev-1"], key=KEY, ttl=3600)
    service = HttpService("127.0.0.1:0", mounts=[McpMount()])
    async with running(topo, "memory://mcp-windows", services=[service]) as run:
        for celsius in (20.0, 22.0, 24.0):
            await run.client.send(Reading(device="dev-1", celsius=celsius),
                                  context=Context.new(token=sensor))  # fmt: skip
        await run.idle()
        async with mcp_client(f"{service.url}/mcp", reader) as client:
            templates = (await client.list_resource_templates()).resource_templates
            assert [t.uri_template for t in templates] == ["state://hourly/{key}"]
            result = await client.read_resource("state://hourly/dev-1")
            (window_,) = json.loads(result.contents[0].text)["value"]  # type: ignore[union-attr]
            assert window_["value"] == 22.0 and window_["count"] == 3
            with pytest.raises(MCPError, match="read:device/dev-2"):
                await client.read_resource("state://hourly/dev-2")
