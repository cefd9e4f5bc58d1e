"""The floor of the gateway benchmarks: a bare aiohttp app answering one fixed JSON body.

Every method on every path gets `200 {"ok":true}` with `Content-Type: application/json`, from a
plain `web.Application` with one catch-all route and no middleware, no logging, no store. What
the gateway costs above this is what the gateway itself does; the benchmark runs the same client
against both in the same run and reports the ratios (docs/benchmarks.md).

    python bench/floor_app.py --port 8799      # 127.0.0.1 only; stops on SIGTERM/SIGINT
"""

from __future__ import annotations

import argparse
import sys

from aiohttp import web

BODY = b'{"ok":true}'


async def answer(_request: web.Request) -> web.Response:
    return web.Response(body=BODY, content_type="application/json")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
