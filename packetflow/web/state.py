"""``GET /state/{name}/{key}``: a reactor's or agent's state for one key, from the worker
that owns the key's partition (Kafka Streams' interactive queries, Faust's ``table_route``).

The worker that owns it answers with the value and the offset it reflects; another forwards
the request once to the owner, found in the members topic where each worker announces its
HTTP address and partitions (a forwarded request carries a hop count and is never forwarded
again); while the partition is being restored or has no known owner: ``503`` with
``Retry-After``. Reading needs ``read:`` on the key's resource: the one the consumed intent
types require for that key (``read:account/a1`` for a reactor of ``withdraw:account/
{account}``), or ``observe:topology/<name>`` where they require nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from packetflow.core.context import Context
from packetflow.engine.runtime.lookup import (
    jsonable,
    owner_of,
    partition_of,
    read_requirement,
    stateful,
)
from packetflow.engine.runtime.view import WorkerView
from packetflow.engine.security.guard import Denial
from packetflow.web.auth import caller, problem, refusal

HOP_HEADER = "x-packetflow-hops"
RETRY_AFTER = "1"


Authorize = Callable[[tuple[tuple[str, str], ...], Context, str, str], Awaitable[Denial | None]]


async def state(
    request: Request, view: WorkerView, http: httpx.AsyncClient, authorize: Authorize
) -> Response:
    name, key = request.path_params["name"], request.path_params["key"]
    topology = view.topology
    if not stateful(topology, name):
        return problem(404, "unknown-state", f"{name!r} is not a stateful reactor or agent")
    who = caller(request)
    context = who.context()
    denial = await authorize(
        (read_requirement(topology, name, key),), context, f"state {name}",
        f"http:GET {request.url.path}",
    )  # fmt: skip
    if denial is not None:
        return refusal(denial, who)
    topic, partition = partition_of(topology, name, key)
    physical = topology.physical(topic)
    if any(tp.topic == physical and tp.partition == partition for tp in view.restoring):
        return _unavailable(f"{topic}[{partition}] is being restored here")
    if view.owns(topic, partition):
        value = view.state(name, key)
        return json_response({
            "name": name, "key": key, "value": value,
            "topic": topic, "partition": partition,
            "offset": view.processed(topic, partition),
            "worker": view.instance_id,
        })  # fmt: skip
    if request.headers.get(HOP_HEADER):
        return _unavailable(f"forwarded here, but {topic}[{partition}] is not this worker's")
    owner = owner_of(view.members(), topic, partition, besides=view.instance_id)
    if owner is None:
        return _unavailable(f"no worker is known to own {topic}[{partition}] (a rebalance?)")
    url = f"http://{owner.advertised['http']}{request.url.path}"
    headers = {HOP_HEADER: "1"}
    for name_ in ("authorization", "cookie"):
        if name_ in request.headers:
            headers[name_] = request.headers[name_]
    try:
        forwarded = await http.get(url, headers=headers)
    except httpx.HTTPError as exc:
        return _unavailable(f"the owner {owner.instance_id} did not answer: {exc}")
    return Response(
        forwarded.content,
        status_code=forwarded.status_code,
        media_type=forwarded.headers.get("content-type"),
        headers={k: v for k, v in forwarded.headers.items() if k.lower() == "retry-after"},
    )


def _unavailable(message: str) -> JSONResponse:
    response = problem(503, "unavailable", message)
    response.headers["Retry-After"] = RETRY_AFTER
    return response


def json_response(body: object, status: int = 200) -> Response:
    """JSON of what state holds (pydantic models, sets and dates included)."""
    return Response(
        orjson.dumps(body, default=jsonable), status_code=status, media_type="application/json"
    )
