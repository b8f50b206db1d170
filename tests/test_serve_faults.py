"""Fault injection for ``bundle serve`` (bundler/serve/faults.py): the middleware against a tiny fake Kubernetes
app on 127.0.0.1, determinism of the decisions, and strict validation of the faults file.

No test sleeps to synchronise or asserts on elapsed time: latency and bandwidth go through an injected
``sleep`` that records what it was asked for and advances a fake clock.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import threading
from collections import Counter
from pathlib import Path

import aiohttp
import orjson
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from bundler.errors import BundleError
from bundler.serve.faults import FaultInjector, FaultsError, parse_api_path, request_verb

PODS = {
    "istio-system": ["ztunnel-a", "ztunnel-b", "istiod-0"],
    "shop": ["web-1", "api-1"],
}
LOG = b"".join(b"2026-11-25T12:00:00.%06dZ\tinfo\taccess\tconnection complete\n" % i for i in range(2000))


def pod(ns: str, name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": ns, "name": name},
            "spec": {"containers": [{"name": "main"}]}}


def fake_kubernetes() -> web.Application:
    """A couple of Kubernetes routes, enough for the middleware."""
    routes = web.RouteTableDef()

    @routes.get("/api/v1/pods")
    async def all_pods(request: web.Request) -> web.Response:
        items = [pod(ns, n) for ns, names in PODS.items() for n in names]
        return web.json_response({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})

    @routes.get("/api/v1/namespaces/{ns}/pods")
    async def pods(request: web.Request) -> web.StreamResponse:
        ns = request.match_info["ns"]
        selector = request.query.get("labelSelector", "")
        items = [pod(ns, n) for n in PODS.get(ns, []) if not selector or selector == f"name={n}"]
        body = orjson.dumps({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})
        if "stream" not in request.query:
            return web.Response(body=body, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})  # as big lists are sent
        await response.prepare(request)
        await response.write(body)
        await response.write_eof()
        return response

    @routes.get("/api/v1/namespaces/{ns}/pods/{name}")
    async def get_pod(request: web.Request) -> web.Response:
        ns, name = request.match_info["ns"], request.match_info["name"]
        if name not in PODS.get(ns, []):
            return web.json_response({"kind": "Status", "code": 404}, status=404)
        return web.json_response(pod(ns, name))

    @routes.get("/api/v1/namespaces/{ns}/pods/{name}/log")
    async def log(request: web.Request) -> web.Response:
        return web.Response(body=LOG, content_type="text/plain")

    @routes.get("/api/v1/namespaces/{ns}/pods/{name}/proxy/{tail:.*}")
    async def proxy(request: web.Request) -> web.Response:
        return web.Response(text="# metrics\n", content_type="text/plain")

    @routes.get("/api/v1/namespaces/{ns}/services")
    async def services(request: web.Request) -> web.Response:
        return web.json_response({"kind": "ServiceList", "apiVersion": "v1", "metadata": {}, "items": []})

    @routes.get("/stream")
    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"x" * 50_000)
        await response.write_eof()
        return response

    return routes  # type: ignore[return-value]


class FakeTime:
    """An injectable clock and sleep: sleeping records the delay and advances the clock, without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def injector(data: dict, fake: FakeTime | None = None) -> FaultInjector:
    fake = fake or FakeTime()
    return FaultInjector.from_dict(data, sleep=fake.sleep, clock=fake.clock)


def run(inj: FaultInjector, scenario) -> object:
    """Serve the fake app behind ``inj.middleware`` on 127.0.0.1 and run ``scenario(session, url)``."""

    async def main():
        app = web.Application(middlewares=[inj.middleware])
        app.add_routes(fake_kubernetes())
        app.on_shutdown.append(inj.on_shutdown)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            async with aiohttp.ClientSession() as session:
                return await scenario(session, lambda path: str(server.make_url(path)))
        finally:
            await asyncio.wait_for(server.close(), 10)

    return asyncio.run(main())


async def fetch(session: aiohttp.ClientSession, url: str, **kwargs) -> tuple[int, dict, bytes]:
    async with session.get(url, **kwargs) as response:
        return response.status, dict(response.headers), await response.read()


# --- paths and verbs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path, expected", [
    ("/api/v1/pods", ("", "v1", None, "pods", "", "")),
    ("/api/v1/namespaces/shop/pods", ("", "v1", "shop", "pods", "", "")),
    ("/api/v1/namespaces/shop/pods/web-1", ("", "v1", "shop", "pods", "web-1", "")),
    ("/api/v1/namespaces/shop/pods/web-1/log", ("", "v1", "shop", "pods", "web-1", "log")),
    ("/api/v1/namespaces/shop/pods/web-1/portforward", ("", "v1", "shop", "pods", "web-1", "portforward")),
    ("/api/v1/namespaces/istio-system/pods/ztunnel-a:15020/proxy/stats/prometheus",
     ("", "v1", "istio-system", "pods", "ztunnel-a", "proxy")),
    ("/api/v1/nodes/n1", ("", "v1", None, "nodes", "n1", "")),
    ("/api/v1/namespaces", ("", "v1", None, "namespaces", "", "")),
    ("/api/v1/namespaces/shop", ("", "v1", "shop", "namespaces", "shop", "")),
    ("/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices",
     ("discovery.k8s.io", "v1", "shop", "endpointslices", "", "")),
    ("/apis/gateway.networking.k8s.io/v1/gatewayclasses/istio",
     ("gateway.networking.k8s.io", "v1", None, "gatewayclasses", "istio", "")),
    ("/version", ("", "", None, "", "", "")),
    ("/apis/security.istio.io/v1", ("security.istio.io", "v1", None, "", "", "")),
])
def test_parse_api_path(path, expected):
    api = parse_api_path(path)
    assert (api.group, api.version, api.namespace, api.resource, api.name, api.subresource) == expected


def test_parse_proxy_name_port_and_path():
    api = parse_api_path("/api/v1/namespaces/istio-system/pods/https:istiod-0:15014/proxy/debug/syncz")
    assert (api.scheme, api.name, api.port, api.proxy_path) == ("https", "istiod-0", "15014", "/debug/syncz")
    assert api.resource_path == "pods/proxy"


@pytest.mark.parametrize("method, path, query, verb", [
    ("GET", "/api/v1/pods", "", "list"),
    ("GET", "/api/v1/pods", "watch=true", "watch"),
    ("GET", "/api/v1/watch/namespaces/a/pods", "", "watch"),
    ("GET", "/api/v1/namespaces/a/pods/p", "", "get"),
    ("GET", "/api/v1/namespaces/a/pods/p/log", "container=x", "get"),
    ("POST", "/api/v1/namespaces/a/pods/p/portforward", "", "create"),
    ("DELETE", "/api/v1/namespaces/a/pods", "", "deletecollection"),
    ("GET", "/version", "", "get"),
])
def test_request_verb(method, path, query, verb):
    assert request_verb(method, parse_api_path(path), query) == verb


# --- Status errors, resets, hangs -------------------------------------------------------------------------


def test_429_has_retry_after_and_a_status_body():
    inj = injector({"rules": [{"verb": "list", "resource": "pods", "fault": 429, "retryAfter": 3}]})

    async def scenario(session, url):
        return await fetch(session, url("/api/v1/namespaces/shop/pods")), await fetch(
            session, url("/api/v1/namespaces/shop/pods/web-1"))

    (status, headers, body), (get_status, _, _) = run(inj, scenario)
    assert status == 429
    assert headers["Retry-After"] == "3"
    assert headers["Content-Type"].startswith("application/json")
    assert orjson.loads(body) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "Too many requests, please try again later.", "reason": "TooManyRequests",
        "details": {"retryAfterSeconds": 3}, "code": 429}
    assert get_status == 200  # a get is not a list
    assert inj.stats["status_429"] == 1


@pytest.mark.parametrize("code, reason", [(500, "InternalError"), (503, "ServiceUnavailable"), (504, "Timeout")])
def test_error_statuses(code, reason):
    inj = injector({"rules": [{"resource": "pods/log", "namespace": "istio-*", "name": "ztunnel-*", "fault": code}]})

    async def scenario(session, url):
        hit = await fetch(session, url("/api/v1/namespaces/istio-system/pods/ztunnel-a/log"))
        other_pod = await fetch(session, url("/api/v1/namespaces/istio-system/pods/istiod-0/log"))
        other_ns = await fetch(session, url("/api/v1/namespaces/shop/pods/web-1/log"))
        return hit, other_pod, other_ns

    (status, _, body), other_pod, other_ns = run(inj, scenario)
    document = orjson.loads(body)
    assert status == code == document["code"]
    assert document["kind"] == "Status" and document["status"] == "Failure"
    assert document["reason"] == reason
    assert other_pod[0] == 200 and other_ns[0] == 200
    assert inj.stats[f"status_{code}"] == 1


def test_rule_path_regex_and_method():
    inj = injector({"rules": [{"method": "GET", "path": r"/proxy/stats/prometheus$", "fault": 503},
                              {"method": "POST", "resource": "*", "fault": 500}]})

    async def scenario(session, url):
        base = "/api/v1/namespaces/istio-system/pods/ztunnel-a:15020/proxy"
        metrics = await fetch(session, url(base + "/stats/prometheus"))
        other = await fetch(session, url(base + "/healthz/ready"))
        return metrics[0], other[0]

    assert run(inj, scenario) == (503, 200)


def test_reset_closes_the_connection_without_an_answer():
    inj = injector({"rules": [{"resource": "pods", "verb": "get", "fault": "reset"}]})

    async def scenario(session, url):
        with pytest.raises(aiohttp.ClientConnectionError):
            await fetch(session, url("/api/v1/namespaces/shop/pods/web-1"))
        return await fetch(session, url("/api/v1/namespaces/shop/pods"))  # the server lives on

    status, _, _ = run(inj, scenario)
    assert status == 200
    assert inj.stats["reset"] >= 1


@pytest.mark.parametrize("release", ["on_shutdown", "shutdown_from_another_thread"])
def test_hang_until_the_client_gives_up_and_shutdown_releases_it(release):
    inj = injector({"rules": [{"resource": "pods/proxy", "fault": "hang"}]})

    async def main():
        app = web.Application(middlewares=[inj.middleware])
        app.add_routes(fake_kubernetes())
        if release == "on_shutdown":
            app.on_shutdown.append(inj.on_shutdown)
        # As `bundle serve` runs it: aiohttp's default, no handler cancellation when a client goes away (the
        # test utilities turn it on), so the hung handler outlives its client.
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as session:
                with pytest.raises(asyncio.TimeoutError):
                    await fetch(session, url + "/api/v1/namespaces/shop/pods/web-1:8080/proxy/",
                                timeout=aiohttp.ClientTimeout(total=0.2))
                ok = await fetch(session, url + "/api/v1/namespaces/shop/pods")
            hung_before = inj.hanging
            if release == "shutdown_from_another_thread":
                thread = threading.Thread(target=inj.shutdown)
                thread.start()
                thread.join()
        finally:
            # Without the release, cleanup waits for the hung handler (aiohttp's shutdown_timeout is 60 s).
            await asyncio.wait_for(runner.cleanup(), 10)
        return ok[0], hung_before, inj.hanging

    assert asyncio.run(main()) == (200, 1, 0)
    assert inj.stats["hang"] == 1


def test_hang_after_shutdown_resets_at_once():
    inj = injector({"rules": [{"resource": "pods", "fault": "hang"}]})
    inj.shutdown()

    async def scenario(session, url):
        with pytest.raises(aiohttp.ClientConnectionError):
            await fetch(session, url("/api/v1/namespaces/shop/pods/web-1"))

    run(inj, scenario)
    assert inj.hanging == 0


# --- 403 --------------------------------------------------------------------------------------------------


def test_forbidden_has_the_api_server_message_shape():
    inj = injector({
        "user": "system:serviceaccount:x:y",
        "forbidden": ["pods", {"resource": "services", "namespaces": ["istio-system"]},
                      {"resource": "endpointslices", "group": "discovery.k8s.io"}],
    })

    async def scenario(session, url):
        paths = ["/api/v1/pods", "/api/v1/namespaces/shop/pods", "/api/v1/namespaces/shop/pods/web-1",
                 "/api/v1/namespaces/istio-system/services", "/api/v1/namespaces/shop/services",
                 "/api/v1/namespaces/shop/pods/web-1/log"]
        return [await fetch(session, url(p)) for p in paths]

    cluster, namespaced, named, svc_denied, svc_ok, log = run(inj, scenario)
    body = orjson.loads(cluster[2])
    assert cluster[0] == 403
    assert body == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'pods is forbidden: User "system:serviceaccount:x:y" cannot list resource "pods" '
                   'in API group "" at the cluster scope',
        "reason": "Forbidden", "details": {"kind": "pods"}, "code": 403}
    assert orjson.loads(namespaced[2])["message"] == (
        'pods is forbidden: User "system:serviceaccount:x:y" cannot list resource "pods" in API group "" '
        'in the namespace "shop"')
    named_body = orjson.loads(named[2])
    assert named_body["message"] == (
        'pods "web-1" is forbidden: User "system:serviceaccount:x:y" cannot get resource "pods" '
        'in API group "" in the namespace "shop"')
    assert named_body["details"] == {"name": "web-1", "kind": "pods"}
    assert svc_denied[0] == 403 and svc_ok[0] == 200
    assert log[0] == 200  # "pods" does not cover the pods/log subresource, as in RBAC
    assert inj.stats["forbidden"] == 4


def test_forbidden_group_resource():
    inj = injector({"forbidden": [{"resource": "endpointslices", "verb": "list"}]})
    api = parse_api_path("/apis/discovery.k8s.io/v1/endpointslices")
    response = inj._forbidden_response("list", api)
    body = orjson.loads(response.body)
    assert body["message"].startswith('endpointslices.discovery.k8s.io is forbidden: User "system:serviceaccount:')
    assert body["message"].endswith('cannot list resource "endpointslices" in API group "discovery.k8s.io" '
                                    'at the cluster scope')
    assert body["details"] == {"group": "discovery.k8s.io", "kind": "endpointslices"}
    assert inj.forbidden("list", api) and not inj.forbidden("get", api)


# --- determinism ------------------------------------------------------------------------------------------


def decisions(seed: int, requests: list[str]) -> list[object]:
    inj = FaultInjector.from_dict({"seed": seed, "rules": [
        {"resource": "pods", "fraction": 0.5, "fault": 500},
        {"resource": "pods/log", "fraction": 0.3, "fault": "reset", "latency": {"ms": 10, "jitterMs": 50}},
    ]})
    return [(d.fault, d.fired, d.latency_ms) for d in (inj.plan("GET", r) for r in requests)]


def test_same_seed_same_decisions_other_seed_differs():
    requests = [f"/api/v1/namespaces/ns/pods/p{i % 7}" for i in range(200)]
    requests += [f"/api/v1/namespaces/ns/pods/p{i % 5}/log?container=main" for i in range(200)]
    assert decisions(7, requests) == decisions(7, requests)
    assert decisions(7, requests) != decisions(8, requests)


def test_decision_depends_on_the_request_not_on_arrival_order():
    a = [f"/api/v1/namespaces/ns/pods/p{i % 4}" for i in range(40)]
    b = sorted(a)  # the same requests per URL, interleaved differently
    by_url_a: dict[str, list] = {}
    by_url_b: dict[str, list] = {}
    for url, d in zip(a, decisions(3, a)):
        by_url_a.setdefault(url, []).append(d)
    for url, d in zip(b, decisions(3, b)):
        by_url_b.setdefault(url, []).append(d)
    assert by_url_a == by_url_b


def test_fraction_over_a_thousand_requests():
    inj = injector({"seed": 11, "rules": [{"resource": "pods", "verb": "get", "fraction": 0.3, "fault": 503}]})

    async def scenario(session, url):
        statuses = Counter()
        for _ in range(1000):
            status, _, _ = await fetch(session, url("/api/v1/namespaces/shop/pods/web-1"))
            statuses[status] += 1
        return statuses

    statuses = run(inj, scenario)
    assert 200 <= statuses[503] <= 400
    assert statuses[503] + statuses[200] == 1000
    assert inj.stats["status_503"] == statuses[503]


def test_concurrent_requests_get_the_same_decisions():
    data = {"seed": 5, "rules": [{"resource": "pods", "fraction": 0.4, "fault": 500},
                                 {"resource": "pods/log", "fraction": 0.5, "fault": 429}]}
    paths = ([f"/api/v1/namespaces/shop/pods/web-{i % 3}" for i in range(30)]
             + [f"/api/v1/namespaces/shop/pods/api-{i % 2}/log" for i in range(30)])

    def outcome(order: list[str]) -> Counter:
        inj = injector(data)

        async def scenario(session, url):
            results = await asyncio.gather(*(fetch(session, url(p)) for p in order))
            return Counter((p, r[0]) for p, r in zip(order, results))

        return run(inj, scenario)

    first = outcome(paths)
    assert first == outcome(list(reversed(paths)))
    assert {status for (_, status) in first} >= {200, 500, 429}


# --- deleted pods, port-forwards, logs ------------------------------------------------------------------------


def test_deleted_pod_answers_404_once_listed():
    inj = injector({"deletedPods": ["shop/web-1", "istio-system/ztunnel-*"]})

    async def scenario(session, url):
        before = await fetch(session, url("/api/v1/namespaces/shop/pods/web-1"))
        listed = await fetch(session, url("/api/v1/namespaces/shop/pods"))
        after = await fetch(session, url("/api/v1/namespaces/shop/pods/web-1"))
        log = await fetch(session, url("/api/v1/namespaces/shop/pods/web-1/log"))
        proxy = await fetch(session, url("/api/v1/namespaces/shop/pods/web-1:8080/proxy/metrics"))
        other = await fetch(session, url("/api/v1/namespaces/shop/pods/api-1"))
        ztunnel_before = await fetch(session, url("/api/v1/namespaces/istio-system/pods/ztunnel-a/log"))
        await fetch(session, url("/api/v1/pods"))  # a cluster-wide list
        ztunnel_after = await fetch(session, url("/api/v1/namespaces/istio-system/pods/ztunnel-a/log"))
        return before, listed, after, log, proxy, other, ztunnel_before, ztunnel_after

    before, listed, after, log, proxy, other, zt_before, zt_after = run(inj, scenario)
    assert before[0] == 200
    names = [p["metadata"]["name"] for p in orjson.loads(listed[2])["items"]]
    assert "web-1" in names  # still listed
    assert after[0] == 404
    assert orjson.loads(after[2]) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'pods "web-1" not found', "reason": "NotFound", "details": {"name": "web-1", "kind": "pods"},
        "code": 404}
    assert log[0] == 404 and proxy[0] == 404 and other[0] == 200
    assert zt_before[0] == 200 and zt_after[0] == 404
    assert inj.pod_deleted("shop", "web-1") and not inj.pod_deleted("shop", "api-1")
    assert inj.stats["not_found"] == 4


def test_deleted_pod_in_a_streamed_list():
    """The middleware cannot read a list the handler streamed: one without a selector covers its namespace."""
    inj = injector({"deletedPods": ["shop/web-1", "shop/api-1"]})

    async def scenario(session, url):
        await fetch(session, url("/api/v1/namespaces/shop/pods?stream=1&labelSelector=name%3Dapi-1"))
        selected = [(await fetch(session, url(f"/api/v1/namespaces/shop/pods/{n}")))[0] for n in ("web-1", "api-1")]
        await fetch(session, url("/api/v1/namespaces/shop/pods?stream=1"))
        everything = [(await fetch(session, url(f"/api/v1/namespaces/shop/pods/{n}")))[0]
                      for n in ("web-1", "api-1")]
        return selected, everything

    assert run(inj, scenario) == ([200, 200], [404, 404])
    assert not inj.pod_deleted("istio-system", "ztunnel-a")


def test_note_listed_by_the_app():
    inj = FaultInjector.from_dict({"deletedPods": ["a/p"]})
    assert not inj.pod_deleted("a", "p")
    inj.note_listed("a", ["q", "p"])
    assert inj.pod_deleted("a", "p") and not inj.pod_deleted("a", "q")


def test_portforward_refused():
    inj = FaultInjector.from_dict({"portforwardRefused": ["istio-system/ztunnel-*", "shop/web-1:15020"]})
    assert inj.portforward_refused("istio-system", "ztunnel-a")
    assert inj.portforward_refused("istio-system", "ztunnel-b", 15000)
    assert not inj.portforward_refused("istio-system", "istiod-0", 15014)
    assert inj.portforward_refused("shop", "web-1", 15020)
    assert not inj.portforward_refused("shop", "web-1", 15000)
    assert inj.stats["portforward_refused"] == 3


# --- latency and bandwidth, through the injected sleep --------------------------------------------------------


def test_latency_uses_the_injected_sleep():
    fake = FakeTime()
    inj = injector({"seed": 1, "latency": {"ms": 250, "jitterMs": 100},
                    "rules": [{"resource": "pods/log", "latency": 1000}]}, fake)

    async def scenario(session, url):
        for _ in range(5):
            await fetch(session, url("/api/v1/namespaces/shop/pods"))
        await fetch(session, url("/api/v1/namespaces/shop/services"))

    run(inj, scenario)
    assert len(fake.sleeps) == 6
    assert all(0.25 <= s < 0.35 for s in fake.sleeps)
    assert len(set(fake.sleeps)) > 1  # jitter
    assert inj.stats["latency"] == 6
    assert 1500 <= inj.stats["latency_ms"] <= 2100
    fake.sleeps.clear()

    async def logs(session, url):
        await fetch(session, url("/api/v1/namespaces/shop/pods/web-1/log"))

    run(inj, logs)
    assert 1.25 <= fake.sleeps[0] < 1.35  # global plus the rule's


def test_bandwidth_streams_the_body_in_chunks():
    fake = FakeTime()
    inj = injector({"bandwidth": 20_000}, fake)

    async def scenario(session, url):
        return await fetch(session, url("/api/v1/namespaces/shop/pods/web-1/log"))

    status, headers, body = run(inj, scenario)
    assert status == 200 and body == LOG
    assert int(headers["Content-Length"]) == len(LOG)
    assert len(fake.sleeps) > 10  # many chunks, not one wait
    assert sum(fake.sleeps) == pytest.approx(len(LOG) / 20_000, rel=0.01)
    assert inj.stats["bandwidth"] == 1


def test_slow_logs_per_pod_and_global():
    fake = FakeTime()
    inj = injector({"bandwidth": 1_000_000,
                    "slowLogs": {"bytesPerSecond": 50_000, "pods": {"istio-system/ztunnel-*": 10_000}}}, fake)
    assert inj.log_bytes_per_second == 50_000
    assert inj.log_rate("istio-system", "ztunnel-a") == 10_000
    assert inj.log_rate("shop", "web-1") == 50_000

    async def scenario(session, url):
        await fetch(session, url("/api/v1/namespaces/istio-system/pods/ztunnel-a/log"))
        first = sum(fake.sleeps)
        fake.sleeps.clear()
        await fetch(session, url("/api/v1/namespaces/shop/pods/web-1/log"))
        return first, sum(fake.sleeps)

    ztunnel, web_pod = run(inj, scenario)
    assert ztunnel == pytest.approx(len(LOG) / 10_000, rel=0.01)
    assert web_pod == pytest.approx(len(LOG) / 50_000, rel=0.01)
    assert inj.stats["slow_logs"] == 2


def test_stream_responses_are_left_alone():
    fake = FakeTime()
    inj = injector({"bandwidth": 1000}, fake)

    async def scenario(session, url):
        return await fetch(session, url("/stream"))

    status, _, body = run(inj, scenario)
    assert status == 200 and len(body) == 50_000
    assert fake.sleeps == [] and inj.stats.get("bandwidth", 0) == 0


# --- validation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data, message", [
    ({"sed": 1}, "unknown key(s) 'sed'"),
    ({"seed": "one"}, "seed: expected an integer"),
    ({"seed": True}, "seed: expected an integer"),
    ({"latency": {"ms": 10, "jitter": 5}}, "latency: unknown key(s) 'jitter'"),
    ({"latency": -1}, "latency: must be >= 0"),
    ({"bandwidth": 0}, "bandwidth: must be >= 1"),
    ({"rules": {"fault": 500}}, "rules: expected a list"),
    ({"rules": [{"fault": 500, "fraction": 1.5}]}, "rules[0].fraction: must be a number from 0 to 1"),
    ({"rules": [{"fault": 500}, {"fault": 500, "fraction": -0.1}]}, "rules[1].fraction"),
    ({"rules": [{"fault": 404}]}, "rules[0].fault: must be one of 429, 500, 503, 504, reset, hang"),
    ({"rules": [{"fault": 500, "retryAfter": 2}]}, "rules[0].retryAfter: only with fault 429"),
    ({"rules": [{"fault": 500, "verb": "fetch"}]}, "rules[0].verb: unknown verb 'fetch'"),
    ({"rules": [{"fault": 500, "method": "FETCH"}]}, "rules[0].method: unknown HTTP method"),
    ({"rules": [{"fault": 500, "path": "(["}]}, "rules[0].path: invalid regular expression"),
    ({"rules": [{"fault": 500, "resource": 3}]}, "rules[0].resource: expected a string"),
    ({"rules": [{"resource": "pods"}]}, "rules[0]: a rule needs a fault, a latency or a bandwidth"),
    ({"rules": [{"fault": "hang", "colour": "red"}]}, "rules[0]: unknown key(s) 'colour'"),
    ({"forbidden": [{"namespaces": ["a"]}]}, "forbidden[0]: missing required key 'resource'"),
    ({"forbidden": [{"resource": "pods", "verbs": ["steal"]}]}, "forbidden[0].verbs: unknown verb"),
    ({"deletedPods": ["web-1"]}, "deletedPods[0]: expected namespace/name"),
    ({"deletedPods": "shop/web-1"}, "deletedPods: expected a list"),
    ({"portforwardRefused": ["a/b/c"]}, "portforwardRefused[0]: expected namespace/name[:port]"),
    ({"slowLogs": "fast"}, "slowLogs: expected a mapping"),
    ({"slowLogs": {"pods": {"a/b": 0}}}, "slowLogs.pods['a/b']: must be >= 1"),
    ({"slowLogs": {"bytesPerSecond": 1.5}}, "slowLogs.bytesPerSecond: expected an integer"),
    ({"user": ""}, "user: expected a user name"),
    ([1, 2], "expected a mapping, got list"),
])
def test_validation_is_strict(data, message):
    with pytest.raises(FaultsError) as info:
        FaultInjector.from_dict(data)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, BundleError)


def test_load_yaml_file(tmp_path: Path):
    path = tmp_path / "faults.yaml"
    path.write_text(inspect.cleandoc("""
        seed: 42
        latency: {ms: 20, jitterMs: 10}
        bandwidth: 1048576
        rules:
          - {verb: list, resource: pods, fraction: 0.2, fault: 429, retryAfter: 1}
          - {resource: pods/portforward, namespace: istio-system, name: "ztunnel-*", fraction: 0.1, fault: reset}
          - {path: '/proxy/debug/', fault: hang, fraction: 0.05}
        forbidden:
          - resource: services
            namespaces: [kube-system]
        deletedPods: [shop/web-1]
        portforwardRefused: ["istio-system/ztunnel-*:15000"]
        slowLogs: 65536
    """))
    inj = FaultInjector.load(path)
    assert inj.config.seed == 42 and len(inj.config.rules) == 3
    assert inj.log_bytes_per_second == 65536
    path.write_text("rules:\n  - fault: 500\n    fraction: 2\n")
    with pytest.raises(FaultsError, match=r"faults.yaml: rules\[0\].fraction"):
        FaultInjector.load(path)
    path.write_text("rules: [\n")
    with pytest.raises(FaultsError, match="not valid YAML"):
        FaultInjector.load(path)
    with pytest.raises(FaultsError, match="cannot read"):
        FaultInjector.load(tmp_path / "missing.yaml")


def test_every_example_in_the_docs_is_valid():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "serve-faults.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", doc, flags=re.S)
    assert len(blocks) >= 10
    for block in blocks:
        FaultInjector.from_dict(yaml.safe_load(block))


def test_empty_file_injects_nothing():
    inj = FaultInjector.from_dict({})
    d = inj.plan("GET", "/api/v1/pods")
    assert (d.fault, d.latency_ms, d.bandwidth, d.fired) == (None, 0.0, None, ())


# --- end to end, with the official client against the served bundle ------------------------------------------


class ServedInThread:
    """``make_app(cluster, token, faults)`` on 127.0.0.1 (plain HTTP: TLS is the server's business, not the
    faults'), on its own event loop in a background thread."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.runner = web.AppRunner(self.app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())
        self.loop.close()

    def __enter__(self) -> ServedInThread:
        self.thread.start()
        assert self.ready.wait(30)
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        assert not self.thread.is_alive()


def test_official_client_sees_injected_faults():
    try:
        from bundler.serve.app import make_app
    except ImportError as exc:
        pytest.skip(f"bundler.serve.app.make_app is not available: {exc}")
    from kubernetes import client
    from kubernetes.client.rest import ApiException
    from urllib3.exceptions import HTTPError as Urllib3Error

    from bundler.serve.state import from_scenario

    cluster = from_scenario(Path(__file__).resolve().parents[1] / "samples" / "bookinfo-healthy.yaml")
    pods = cluster.list("", "pods", "bookinfo")
    deleted, kept = pods[0]["metadata"]["name"], pods[1]["metadata"]["name"]
    inj = FaultInjector.from_dict({
        "user": "system:serviceaccount:x:y",
        "forbidden": [{"resource": "pods", "verb": "list", "namespace": "kube-system"}, "configmaps"],
        "deletedPods": [f"bookinfo/{deleted}"],
        "rules": [{"verb": "list", "resource": "services", "fault": 429, "retryAfter": 7},
                  {"resource": "pods/log", "name": kept, "fault": "reset"}],
    })
    app = make_app(cluster, "s3cret", faults=inj)
    app.on_shutdown.append(inj.on_shutdown)
    with ServedInThread(app) as served:
        configuration = client.Configuration()
        configuration.host = f"http://127.0.0.1:{served.port}"
        configuration.api_key = {"authorization": "s3cret"}
        configuration.api_key_prefix = {"authorization": "Bearer"}
        configuration.retries = 0
        core = client.CoreV1Api(client.ApiClient(configuration))

        with pytest.raises(ApiException) as forbidden:
            core.list_namespaced_pod("kube-system")
        assert forbidden.value.status == 403
        assert orjson.loads(forbidden.value.body)["message"] == (
            'pods is forbidden: User "system:serviceaccount:x:y" cannot list resource "pods" in API group "" '
            'in the namespace "kube-system"')
        with pytest.raises(ApiException) as forbidden_cluster:
            core.list_config_map_for_all_namespaces()
        assert orjson.loads(forbidden_cluster.value.body)["message"].endswith("at the cluster scope")

        with pytest.raises(ApiException) as throttled:
            core.list_namespaced_service("bookinfo")
        assert throttled.value.status == 429 and throttled.value.headers["Retry-After"] == "7"
        assert orjson.loads(throttled.value.body)["reason"] == "TooManyRequests"

        assert core.read_namespaced_pod(deleted, "bookinfo").metadata.name == deleted  # not listed yet
        names = [p.metadata.name for p in core.list_namespaced_pod("bookinfo").items]
        assert deleted in names and kept in names
        with pytest.raises(ApiException) as gone:
            core.read_namespaced_pod(deleted, "bookinfo")
        assert gone.value.status == 404
        assert orjson.loads(gone.value.body)["message"] == f'pods "{deleted}" not found'
        assert core.read_namespaced_pod(kept, "bookinfo").metadata.name == kept

        with pytest.raises(Urllib3Error):  # the connection is reset: no HTTP answer at all
            core.read_namespaced_pod_log(kept, "bookinfo")

    assert inj.stats["forbidden"] == 2 and inj.stats["status_429"] == 1
    assert inj.stats["not_found"] == 1 and inj.stats["reset"] == 1
