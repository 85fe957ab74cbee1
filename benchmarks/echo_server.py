"""The floor under any served path: one HTTP hop to an app that does nothing.

    python -m benchmarks.echo_server --port 8999

A FastAPI app on uvicorn, run the way the services run (``neukonfig.service.run_uvicorn``:
same server, same HTTP protocol), whose one route reads the body and answers a fixed
small one. ``benchmarks/data_path.py`` times the same client against it: what the client
and one loopback hop cost before any model, framing or routing, against which the
served path's overhead (three hops: gateway, edge, cloud) can be read.
"""

from __future__ import annotations

import argparse

from fastapi import FastAPI, Request, Response

from neukonfig.service import run_uvicorn

ANSWER = b"\0" * 64  # about what tiny's binary answer carries (10 float32 logits + header)


def create_app() -> FastAPI:
    app = FastAPI(title="echo floor")

    @app.post("/echo")
    async def echo(request: Request) -> Response:
        await request.body()
        return Response(ANSWER, media_type="application/octet-stream")

    @app.get("/health/live")
    def live() -> dict[str, bool]:
        return {"live": True}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    run_uvicorn(create_app(), host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
