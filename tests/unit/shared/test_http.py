"""service_app: the shared /health and /metrics, and one error → HTTP status table."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from headwater.shared import errors
from headwater.shared.http import http_status_for, service_app


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    state = {"ready": False}

    async def fail(request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        raise getattr(errors, kind)(f"{kind} here") if kind != "bug" else KeyError("secret")

    async def flip(_: web.Request) -> web.Response:
        state["ready"] = True
        return web.json_response({})

    app = service_app(lambda: state["ready"], lambda: b"# metrics\n")
    app.router.add_get("/fail/{kind}", fail)
    app.router.add_post("/ready", flip)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def test_health_is_503_until_ready_then_200(client: TestClient) -> None:
    reply = await client.get("/health")
    assert (reply.status, await reply.json()) == (503, {"status": "starting"})
    await client.post("/ready")
    reply = await client.get("/health")
    assert (reply.status, await reply.json()) == (200, {"status": "serving"})


async def test_metrics_are_prometheus_text(client: TestClient) -> None:
    reply = await client.get("/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain")
    assert await reply.text() == "# metrics\n"


@pytest.mark.parametrize(
    ("kind", "status"),
    [("InvalidInput", 400), ("ModelNotFound", 404), ("AlreadyExists", 409),
     ("FailedPrecondition", 400), ("ModelNotReady", 503), ("Unauthenticated", 401),
     ("PermissionDenied", 403), ("ResourceExhausted", 429), ("Unavailable", 503)],
)
async def test_a_headwater_error_becomes_its_status_with_its_message(
    client: TestClient, kind: str, status: int
) -> None:
    reply = await client.get(f"/fail/{kind}")
    assert (reply.status, await reply.json()) == (status, {"error": f"{kind} here"})


async def test_a_bug_is_500_logged_with_its_trace_id_and_leaks_nothing(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="headwater.shared.grpc_errors"):
        reply = await client.get("/fail/bug")
    body = await reply.json()
    assert reply.status == 500
    assert body["error"].startswith("internal error (trace id ") and "secret" not in body["error"]
    assert any(record.exc_info for record in caplog.records)


async def test_aiohttp_answers_unknown_routes_itself(client: TestClient) -> None:
    assert (await client.get("/nowhere")).status == 404
    assert (await client.post("/health")).status == 405


def _kinds(kind: type[errors.HeadwaterError]) -> list[type[errors.HeadwaterError]]:
    return [kind, *(sub for child in kind.__subclasses__() for sub in _kinds(child))]


def test_every_error_of_the_hierarchy_has_an_http_status() -> None:
    # Every kind, including ones defined outside shared/errors.py, maps without a KeyError.
    statuses = {kind.__name__: http_status_for(kind("x")) for kind in _kinds(errors.HeadwaterError)}
    assert statuses["HeadwaterError"] == 500 and statuses["ArtifactIntegrityError"] == 500
