"""Fault flags: parsing, matching, the decisions of the interceptor and the middleware, and the
blocking-query bookkeeping of the watcher (with a fake Consul: no network)."""

import asyncio
import base64
import json
import logging
import ssl

import grpc
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client import REGISTRY

from services.common import faults
from services.common.faults import NO_FAULTS, Decision, Faults, InvalidFaults, parse_faults

PAY = "/shopmesh.payments.v1.PaymentService/ProcessPayment"
GET = "/shopmesh.payments.v1.PaymentService/GetPayment"


# --- parsing -------------------------------------------------------------------------------


def test_a_full_fault_value_is_parsed():
    value = '{"error_rate": 0.5, "latency_ms": 200, "methods": ["ProcessPayment"]}'
    assert parse_faults(value) == Faults(0.5, 200.0, ("ProcessPayment",))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"error_rate": 1}', Faults(error_rate=1.0)),
        ('{"latency_ms": 0.5}', Faults(latency_ms=0.5)),
        ('{"error_rate": 0, "methods": []}', NO_FAULTS),
        ('{"error_rate": 0.1, "methods": null}', Faults(error_rate=0.1)),
        ("{}", NO_FAULTS),
        ("", NO_FAULTS),
        (None, NO_FAULTS),
        (b'{"error_rate": 0.25}', Faults(error_rate=0.25)),
    ],
)
def test_missing_fields_mean_no_fault_of_that_kind(raw, expected):
    assert parse_faults(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not json", "not valid JSON"),
        ("[0.5]", "must be a JSON object"),
        ('{"error_rate": 1.5}', "error_rate must be between 0 and 1"),
        ('{"error_rate": -0.1}', "error_rate must be between 0 and 1"),
        ('{"error_rate": "0.5"}', "error_rate must be a number"),
        ('{"error_rate": true}', "error_rate must be a number"),
        ('{"latency_ms": -1}', "latency_ms must be between 0 and 60000"),
        ('{"latency_ms": 60001}', "latency_ms must be between 0 and 60000"),
        ('{"methods": "ProcessPayment"}', "methods must be a list of non-empty strings"),
        ('{"methods": [""]}', "methods must be a list of non-empty strings"),
        ('{"methods": [1]}', "methods must be a list of non-empty strings"),
        ('{"error-rate": 1}', "unknown field 'error-rate'"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_invalid_fault_values_are_refused_with_the_reason(raw, reason):
    with pytest.raises(InvalidFaults, match=reason):
        parse_faults(raw)


# --- matching and decisions ----------------------------------------------------------------


def test_faults_without_methods_apply_to_every_method_but_health_checks():
    everything = Faults(error_rate=1.0)
    assert everything.applies_to_method(PAY)
    assert everything.applies_to_method(GET)
    assert not everything.applies_to_method("/grpc.health.v1.Health/Check")


def test_faults_with_methods_apply_to_those_short_names_only():
    only_pay = Faults(error_rate=1.0, methods=("ProcessPayment",))
    assert only_pay.applies_to_method(PAY)
    assert not only_pay.applies_to_method(GET)


def test_no_faults_apply_to_nothing():
    assert not NO_FAULTS.applies_to_method(PAY)
    assert not NO_FAULTS.applies_to_path("/orders")


@pytest.mark.parametrize(
    ("path", "applies"),
    [
        ("/orders", True),
        ("/orders/123", True),
        ("/ordersx", False),
        ("/users", False),
    ],
)
def test_http_faults_match_path_prefixes_at_segment_boundaries(path, applies):
    assert Faults(error_rate=1.0, methods=("/orders/",)).applies_to_path(path) is applies


def test_http_faults_without_methods_cover_every_path():
    assert Faults(latency_ms=5).applies_to_path("/anything")


@pytest.mark.parametrize(
    ("error_rate", "draw", "fail"),
    [(0.5, 0.49, True), (0.5, 0.5, False), (1.0, 0.999, True), (0.0, 0.0, False)],
)
def test_a_call_fails_when_the_random_draw_is_below_the_error_rate(error_rate, draw, fail):
    decision = faults.decide(Faults(error_rate=error_rate, latency_ms=200), True, lambda: draw)
    assert decision == Decision(0.2, fail)


def test_a_call_the_faults_do_not_cover_is_left_alone():
    def never():
        raise AssertionError("no random draw for a call the flags do not cover")

    assert faults.decide(Faults(error_rate=1.0), False, never) == Decision(0.0, False)


# --- the gRPC interceptor --------------------------------------------------------------------


class FakeContext:
    def __init__(self):
        self.aborted = None

    async def abort(self, code, details=""):
        self.aborted = (code, details)
        raise grpc.aio.AbortError()


class Recorder:
    def __init__(self):
        self.events = []

    async def sleep(self, seconds):
        self.events.append(("sleep", seconds))


def intercept(current, method, draw, recorder):
    """Run one unary call through a FaultInterceptor; return (result, context)."""

    async def behavior(_request, _context):
        recorder.events.append(("handler",))
        return "response"

    async def continuation(_details):
        return grpc.unary_unary_rpc_method_handler(behavior)

    class Details:
        pass

    details = Details()
    details.method = method
    interceptor = faults.FaultInterceptor(
        lambda: current, random_source=lambda: draw, sleep=recorder.sleep
    )
    context = FakeContext()

    async def go():
        handler = await interceptor.intercept_service(continuation, details)
        try:
            return await handler.unary_unary(object(), context)
        except grpc.aio.AbortError:
            return "aborted"

    return asyncio.run(go()), context


def test_the_interceptor_sleeps_the_latency_then_aborts_with_unavailable():
    recorder = Recorder()
    result, context = intercept(Faults(error_rate=0.5, latency_ms=200), PAY, 0.1, recorder)
    assert result == "aborted"
    assert context.aborted == (grpc.StatusCode.UNAVAILABLE, "injected fault")
    assert recorder.events == [("sleep", 0.2)]


def test_the_interceptor_adds_latency_to_calls_that_do_not_fail():
    recorder = Recorder()
    result, context = intercept(Faults(error_rate=0.5, latency_ms=200), PAY, 0.9, recorder)
    assert result == "response"
    assert context.aborted is None
    assert recorder.events == [("sleep", 0.2), ("handler",)]


def test_the_interceptor_leaves_other_methods_alone():
    recorder = Recorder()
    only_pay = Faults(error_rate=1.0, latency_ms=200, methods=("ProcessPayment",))
    result, _context = intercept(only_pay, GET, 0.0, recorder)
    assert result == "response"
    assert recorder.events == [("handler",)]


def test_the_interceptor_reads_the_current_flags_on_every_call():
    recorder = Recorder()
    result, _ = intercept(NO_FAULTS, PAY, 0.0, recorder)
    assert result == "response"
    result, _ = intercept(Faults(error_rate=1.0), PAY, 0.0, recorder)
    assert result == "aborted"


# --- the aiohttp middleware -----------------------------------------------------------------


def middleware_call(current, path, draw):
    recorder = Recorder()

    async def handler(_request):
        recorder.events.append(("handler",))
        return web.Response(text="ok")

    middleware = faults.fault_middleware(
        lambda: current, random_source=lambda: draw, sleep=recorder.sleep
    )
    response = asyncio.run(middleware(make_mocked_request("GET", path), handler))
    return response, recorder.events


def test_the_middleware_answers_an_injected_error_with_a_503_problem():
    response, events = middleware_call(Faults(error_rate=1.0, latency_ms=50), "/orders", 0.3)
    assert response.status == 503
    assert response.content_type == "application/problem+json"
    body = json.loads(response.body)
    assert body["type"] == "/problems/injected-fault"
    assert body["status"] == 503
    assert body["instance"] == "/orders"
    assert events == [("sleep", 0.05)]


def test_the_middleware_passes_requests_through_when_the_draw_spares_them():
    response, events = middleware_call(Faults(error_rate=0.3, latency_ms=50), "/orders/1", 0.3)
    assert response.status == 200
    assert events == [("sleep", 0.05), ("handler",)]


def test_install_fault_flags_adds_the_middleware_and_the_watch_to_an_app():
    app = web.Application()
    faults.install_fault_flags(app, "https://127.0.0.1:8500", "orders", "orders-token", TLS)
    assert len(app.middlewares) == 1
    assert len(app.cleanup_ctx) == 1


# --- the watcher (fake Consul) --------------------------------------------------------------


class FakeResponse:
    def __init__(self, status, index, body):
        self.status = status
        self.headers = {} if index is None else {"X-Consul-Index": str(index)}
        self._body = body
        self.request_info = None

    async def json(self):
        return self._body

    async def text(self):
        return json.dumps(self._body)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return False


class FakeConsul:
    """Answers blocking queries from a script and records the parameters sent."""

    def __init__(self, *responses):
        self.responses = list(responses)
        self.params = []
        self.tokens = []

    def get(self, url, params, headers, ssl):
        assert url == "https://consul:8500/v1/kv/shopmesh/faults/payments"
        assert ssl is TLS, "the agent is checked with the context the watcher was given"
        self.params.append(dict(params))
        self.tokens.append(headers["X-Consul-Token"])
        return self.responses.pop(0)


TOKEN = "payments-token"
TLS = ssl.create_default_context()


def kv(value):
    encoded = base64.b64encode(value.encode()).decode()
    return [{"Key": "shopmesh/faults/payments", "Value": encoded, "ModifyIndex": 7}]


def watch(*responses):
    watcher = faults.FaultWatcher("https://consul:8500/", "payments", token=TOKEN, tls=TLS)
    consul = FakeConsul(*responses)

    async def go():
        for _ in responses:
            await watcher.poll(consul)

    asyncio.run(go())
    return watcher, consul


def test_the_watcher_applies_the_key_and_blocks_on_the_returned_index():
    watcher, consul = watch(
        FakeResponse(200, 7, kv('{"error_rate": 1}')),
        FakeResponse(404, 9, None),
    )
    assert consul.params == [
        {"wait": "30s", "stale": ""},
        {"wait": "30s", "stale": "", "index": "7"},
    ]
    assert consul.tokens == [TOKEN, TOKEN], "every query carries the service's token"
    assert watcher.current == NO_FAULTS


def test_a_missing_key_means_no_faults():
    watcher, _ = watch(FakeResponse(404, 3, None))
    assert watcher.current == NO_FAULTS


def test_the_watcher_starts_over_when_the_index_goes_backwards():
    _, consul = watch(
        FakeResponse(200, 50, kv('{"error_rate": 1}')),
        FakeResponse(200, 10, kv('{"error_rate": 1}')),
        FakeResponse(200, 11, kv('{"error_rate": 1}')),
    )
    assert [p.get("index") for p in consul.params] == [None, "50", None]


def test_the_watcher_never_sends_an_index_below_one():
    _, consul = watch(FakeResponse(404, 0, None), FakeResponse(404, 0, None))
    assert [p.get("index") for p in consul.params] == [None, "1"]


def test_an_error_answer_from_consul_raises_and_keeps_the_last_flags():
    watcher, _ = watch(FakeResponse(200, 4, kv('{"latency_ms": 100}')))
    consul = FakeConsul(FakeResponse(500, 5, "leader not elected"))
    with pytest.raises(faults.WatchError, match=r"HTTP 500.*leader not elected"):
        asyncio.run(watcher.poll(consul))
    assert watcher.current == Faults(latency_ms=100)


def test_an_invalid_value_is_logged_and_means_no_faults(caplog):
    watcher = faults.FaultWatcher("https://consul:8500", "payments", token=TOKEN, tls=TLS)
    watcher.apply('{"error_rate": 1}')
    watcher.apply('{"error_rate": 2}')
    assert watcher.current == NO_FAULTS
    [record] = [r for r in caplog.records if r.getMessage() == "invalid fault flags ignored"]
    assert record.levelno == logging.WARNING
    assert "error_rate must be between 0 and 1" in record.error


def test_the_instance_says_on_its_metrics_whether_its_flags_are_in_effect():
    def in_effect():
        return REGISTRY.get_sample_value(
            "shopmesh_fault_injection_active", {"service": "flagged-service"}
        )

    watcher = faults.FaultWatcher("https://consul:8500", "flagged-service", token=TOKEN, tls=TLS)
    assert in_effect() == 0
    watcher.apply('{"error_rate": 0.5}')
    assert in_effect() == 1
    watcher.apply(None)
    assert in_effect() == 0


def test_consul_failures_are_logged_at_most_once_per_interval(caplog, monkeypatch):
    clock = iter([100.0, 101.0, 104.9, 105.1])
    monkeypatch.setattr(faults.time, "monotonic", lambda: next(clock))
    watcher = faults.FaultWatcher("https://consul:8500", "payments", token=TOKEN, tls=TLS)
    for _ in range(4):
        watcher._failed(ConnectionRefusedError("refused"), 0.5)
    warnings = [r for r in caplog.records if r.getMessage().startswith("cannot watch fault flags")]
    assert len(warnings) == 2
