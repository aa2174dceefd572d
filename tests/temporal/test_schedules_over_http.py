"""A schedule made over HTTP: ``POST /intents/packetflow.temporal.CreateSchedule`` takes the
same path as any intent (the bearer token checked by the worker's guard, ``schedule:`` on
the resource and the scheduled intent's own grants), and its firing reaches the reactor
with the authority the token gave."""

from __future__ import annotations

import httpx
from support.running import new_topology, running, unique
from support.webshop import KEY, SECRET, bearer

from packetflow import Context, Intent, Security, issue_token
from packetflow.temporal import after, scheduler
from packetflow.web import HttpService


class Ping(Intent, type_name="httpsched.Ping", key="target", requires=["ping:target/{target}"]):
    target: str


async def test_a_schedule_posted_over_http_fires(broker: str) -> None:
    topo = new_topology("httpsched", security=Security(trusted_keys=[KEY], worker_secret=SECRET))
    schedules = scheduler(topo)

    @topo.reactor(Ping, topic=unique("pings"), state=int)
    def pings(ping: Ping, ctx: Context, count: int) -> tuple[int, None]:
        return count + 1, None

    token = issue_token("ops", ["ping:target/*", "schedule:target/*"], key=KEY, ttl=600)
    weak = issue_token("intern", ["ping:target/*"], key=KEY, ttl=600)
    created = schedules.create(Ping(target="t1"), after(0.3), id="p1")
    body = created.model_dump(mode="json")
    service = HttpService("127.0.0.1:0")
    async with running(topo, broker, services=[service]) as run:
        async with httpx.AsyncClient(base_url=service.url) as http:
            path = "/intents/packetflow.temporal.CreateSchedule"
            refused = await http.post(path, json=body, headers=bearer(weak))
            assert refused.status_code == 403
            assert refused.json()["missing"] == ["schedule:target/t1"]
            accepted = await http.post(path, json=body, headers=bearer(token))
            assert accepted.status_code == 202, accepted.text
        (fired,) = await run.wait_for(topo.reactors["pings"].topic, 1)
        assert fired.context is not None and fired.context.principal == "ops"
        assert fired.context.baggage["schedule"] == "p1"
        await run.idle()
        assert run.state("pings", "t1") == 1
