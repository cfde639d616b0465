"""The ceiling: a hello-world Starlette app under the same uvicorn settings as stepup
(`python -m benchmarks.hello --port P --workers N`)."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from stepup.serving import UVICORN_OPTIONS, settle_heap


async def hello(request: Request) -> Response:
    return PlainTextResponse("Hello, world!")


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    settle_heap()  # as `stepup serve` does once started
    yield


app = Starlette(routes=[Route("/", hello)], lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    target = "benchmarks.hello:app" if args.workers > 1 else app
    uvicorn.run(target, host="127.0.0.1", port=args.port, workers=args.workers, **UVICORN_OPTIONS)


if __name__ == "__main__":
    main()
