import json
import logging
import sys

from services.common.logging import JsonFormatter, configure_logging, outcome_level, redact_url


def record(msg, *args, exc_info=None, **extra):
    logger = logging.getLogger("test")
    rec = logger.makeRecord("test", logging.INFO, __file__, 1, msg, args, exc_info, extra=extra)
    return json.loads(JsonFormatter("orders", "orders-1").format(rec))


def test_log_line_is_one_json_object_with_the_standard_fields():
    line = record("order created", order_id="8f14e45f")
    assert line["level"] == "info"
    assert line["service"] == "orders"
    assert line["instance"] == "orders-1"
    assert line["msg"] == "order created"
    assert line["order_id"] == "8f14e45f"
    assert line["ts"].endswith("Z")


def test_message_arguments_are_interpolated():
    assert record("applied %d migrations", 2)["msg"] == "applied 2 migrations"


def test_fields_that_look_secret_are_redacted():
    line = record("x", password="hunter2", access_token="t", database_url="postgresql://a:b@h/d")
    assert line["password"] == "[redacted]"
    assert line["access_token"] == "[redacted]"
    assert line["database_url"] == "[redacted]"


def test_extra_fields_cannot_replace_the_standard_ones():
    assert record("x", service="other")["service"] == "orders"


def test_exceptions_are_kept_on_one_line():
    try:
        raise ValueError("boom")
    except ValueError:
        line = record("failed", exc_info=sys.exc_info())
    assert "ValueError: boom" in line["exc"]


def test_unserialisable_values_are_stringified():
    assert record("x", when=object())["when"].startswith("<object")


def test_urls_lose_their_password():
    assert redact_url("postgresql://orders:s3cret@127.0.0.1:15432/orders") == (
        "postgresql://orders:[redacted]@127.0.0.1:15432/orders"
    )
    assert redact_url("postgresql://127.0.0.1/orders") == "postgresql://127.0.0.1/orders"
    assert (
        redact_url("postgresql://orders@[::1]:5432/orders")
        == "postgresql://orders@[::1]:5432/orders"
    )


def test_a_multi_host_url_loses_its_password_and_keeps_every_host():
    url = "postgresql://orders:s3cret@127.0.0.1:15432,127.0.0.1:15433/orders?target_session_attrs=read-write"
    assert redact_url(url) == url.replace("s3cret", "[redacted]")


def test_configure_logging_writes_json_lines_to_stderr(capsys):
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("orders", "orders-1", "warning")
        logging.getLogger("x").info("hidden")
        logging.getLogger("x").warning("shown", extra={"attempt": 2})
        err = capsys.readouterr().err.strip().splitlines()
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
    assert [json.loads(line)["msg"] for line in err] == ["shown"]
    assert json.loads(err[0])["attempt"] == 2


def test_a_request_is_logged_louder_the_worse_it_went() -> None:
    assert outcome_level(client_error=False, server_error=False) == logging.DEBUG
    assert outcome_level(client_error=True, server_error=False) == logging.INFO
    assert outcome_level(client_error=False, server_error=True) == logging.WARNING
