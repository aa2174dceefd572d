"""``/metrics`` (Prometheus), ``/health/live`` and ``/health/ready``: served by the worker's
HTTP server when ``--http`` is on, else by a small one of their own (``--metrics``).

Ready means the worker has read its revocations to the end (it does before it joins the
group) and no partition assigned to it is still being restored; while one is, ``503`` with
the reason and ``Retry-After``. They carry counts, never content or tokens: serve them on an
address only your monitoring reaches.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from packetflow.engine.runtime.view import WorkerView
from packetflow.observability.prometheus import CONTENT_TYPE, EngineCollector, exposition


def routes(view: WorkerView) -> list[Route]:
    collector = EngineCollector(view)

    async def metrics(request: Request) -> Response:
        await collector.refresh()
        return Response(exposition(collector), media_type=CONTENT_TYPE)

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True, "worker": view.instance_id})

    async def ready(request: Request) -> Response:
        restoring = view.restoring
        if restoring:
            parts = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(restoring))
            return JSONResponse({"ready": False, "reason": f"restoring {parts}"},
                                status_code=503, headers={"Retry-After": "1"})  # fmt: skip
        return JSONResponse({"ready": True, "worker": view.instance_id,
                             "partitions": len(view.assignment)})  # fmt: skip

    return [
        Route("/metrics", metrics, methods=["GET"]),
        Route("/health/live", live, methods=["GET"]),
        Route("/health/ready", ready, methods=["GET"]),
    ]
