"""The floor under the admission scenario: a mutating webhook that allows every review unchanged,
on the same certificate, port range and host as the operator's, so what the operator's adds to a
create is measured against what any webhook costs here (TLS, the API server's call, one JSON
round trip).

`python -m bench.trivial_webhook PORT CERTS`; runs until killed."""

from __future__ import annotations

import ssl
import sys
from pathlib import Path

import orjson
from aiohttp import web


async def review(request: web.Request) -> web.Response:
    asked = orjson.loads(await request.read())
    answer = {
        "apiVersion": asked.get("apiVersion") or "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": asked["request"]["uid"], "allowed": True},
    }
    return web.Response(body=orjson.dumps(answer), content_type="application/json")


def serve(port: int, certs: Path) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs / "tls.crt", certs / "tls.key")
    app = web.Application()
    app.add_routes([web.post("/{path:.*}", review)])
    web.run_app(app, host="0.0.0.0", port=port, ssl_context=context, print=None)


if __name__ == "__main__":
    serve(int(sys.argv[1]), Path(sys.argv[2]))
