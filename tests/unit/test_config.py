import json
import ssl

import pytest
from cryptography.hazmat.primitives import serialization

from mesh.runtime.tls import new_ca
from services.common.config import ConfigError, ServiceSettings, Upstream

ENV = {
    "SHOPMESH_SERVICE": "orders",
    "SHOPMESH_INSTANCE": "orders-1",
    "SHOPMESH_PORT": "7001",
    "SHOPMESH_CONSUL_HTTP_ADDR": "https://127.0.0.1:8500",
    "SHOPMESH_DATABASE_URL": "postgresql://orders:pw@127.0.0.1:15432/orders",
    "SHOPMESH_REGISTRATION": json.dumps({"ID": "orders-1", "Name": "orders", "Port": 7001}),
}


@pytest.fixture(autouse=True)
def consul_token_file(tmp_path, monkeypatch):
    path = tmp_path / "orders.token"
    path.write_text("a-consul-secret\n")
    monkeypatch.setitem(ENV, "SHOPMESH_CONSUL_TOKEN_FILE", str(path))
    return path


@pytest.fixture(autouse=True)
def consul_ca_file(tmp_path, monkeypatch):
    path = tmp_path / "consul-ca.pem"
    _, cert = new_ca("a test consul CA")
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    monkeypatch.setitem(ENV, "SHOPMESH_CONSUL_CA_FILE", str(path))
    return path


def settings(**overrides):
    env = {**ENV, **overrides}
    return ServiceSettings.from_env({k: v for k, v in env.items() if v is not None})


def test_minimal_environment_gets_loopback_defaults():
    s = settings()
    assert s.service == "orders"
    assert s.instance == "orders-1"
    assert s.port == 7001
    assert s.registration == {"ID": "orders-1", "Name": "orders", "Port": 7001}
    assert s.bind_host == "127.0.0.1"
    assert s.upstreams == ()
    assert s.log_level == "info"
    assert s.consul_http_addr == "https://127.0.0.1:8500"


@pytest.mark.parametrize(
    "name",
    [
        "SHOPMESH_SERVICE",
        "SHOPMESH_INSTANCE",
        "SHOPMESH_PORT",
        "SHOPMESH_CONSUL_HTTP_ADDR",
        "SHOPMESH_CONSUL_TOKEN_FILE",
        "SHOPMESH_CONSUL_CA_FILE",
        "SHOPMESH_DATABASE_URL",
        "SHOPMESH_REGISTRATION",
    ],
)
def test_missing_required_variable_is_named_in_the_error(name):
    with pytest.raises(ConfigError, match=name):
        settings(**{name: None})


def test_the_consul_token_is_read_from_its_file_and_kept_out_of_the_repr():
    s = settings()
    assert s.consul_token == "a-consul-secret"
    assert "a-consul-secret" not in repr(s)


def test_an_unreadable_or_empty_consul_token_file_is_named_in_the_error(tmp_path):
    with pytest.raises(ConfigError, match="SHOPMESH_CONSUL_TOKEN_FILE: cannot read"):
        settings(SHOPMESH_CONSUL_TOKEN_FILE=str(tmp_path / "missing"))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match=r"SHOPMESH_CONSUL_TOKEN_FILE: .* is empty"):
        settings(SHOPMESH_CONSUL_TOKEN_FILE=str(tmp_path / "empty"))


def test_blank_required_variable_counts_as_missing():
    with pytest.raises(ConfigError, match="SHOPMESH_SERVICE is required"):
        settings(SHOPMESH_SERVICE="  ")


@pytest.mark.parametrize("port", ["http", "0", "65536", "-1", "70.5"])
def test_port_must_be_a_tcp_port_number(port):
    with pytest.raises(ConfigError, match="SHOPMESH_PORT must be a TCP port"):
        settings(SHOPMESH_PORT=port)


def test_upstreams_are_read_from_json():
    s = settings(
        SHOPMESH_UPSTREAMS='[{"name": "users", "local_bind_port": 9201},'
        ' {"name": "payments", "local_bind_port": 9202}]'
    )
    assert s.upstreams == (Upstream("users", 9201), Upstream("payments", 9202))


@pytest.mark.parametrize("raw", ["", "[]", "  "])
def test_unset_or_empty_upstreams_mean_none(raw):
    assert settings(SHOPMESH_UPSTREAMS=raw).upstreams == ()


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        ("[{", "SHOPMESH_UPSTREAMS is not valid JSON"),
        ('{"name": "users"}', "SHOPMESH_UPSTREAMS must be a JSON list"),
        ('["users"]', r"SHOPMESH_UPSTREAMS\[0\] must be an object"),
        ('[{"local_bind_port": 9201}]', r"SHOPMESH_UPSTREAMS\[0\]\.name"),
        ('[{"name": "users"}]', r"SHOPMESH_UPSTREAMS\[0\]\.local_bind_port"),
        ('[{"name": "users", "local_bind_port": true}]', r"\[0\]\.local_bind_port"),
        ('[{"name": "users", "local_bind_port": 9201.5}]', r"\[0\]\.local_bind_port"),
    ],
)
def test_malformed_upstreams_are_refused_with_their_location(raw, where):
    with pytest.raises(ConfigError, match=where):
        settings(SHOPMESH_UPSTREAMS=raw)


def test_log_level_is_case_insensitive_and_checked():
    assert settings(SHOPMESH_LOG_LEVEL="DEBUG").log_level == "debug"
    with pytest.raises(ConfigError, match="SHOPMESH_LOG_LEVEL"):
        settings(SHOPMESH_LOG_LEVEL="verbose")


def test_consul_address_must_be_an_https_url_and_loses_its_trailing_slash():
    assert settings(SHOPMESH_CONSUL_HTTP_ADDR="https://127.0.0.1:8500/").consul_http_addr == (
        "https://127.0.0.1:8500"
    )
    for plain in ("127.0.0.1:8500", "http://127.0.0.1:8500"):
        with pytest.raises(ConfigError, match="SHOPMESH_CONSUL_HTTP_ADDR"):
            settings(SHOPMESH_CONSUL_HTTP_ADDR=plain)


def test_consul_is_checked_with_the_ca_file_it_is_given_and_no_other(consul_ca_file):
    tls = settings().consul_tls()
    assert tls.verify_mode == ssl.CERT_REQUIRED and tls.check_hostname
    assert [ca["subject"] for ca in tls.get_ca_certs()] == [
        ((("organizationName", "shopmesh local"),), (("commonName", "a test consul CA"),))
    ]


@pytest.mark.parametrize(
    "content, error", [(None, "cannot read"), ("not a certificate", "holds no PEM certificate")]
)
def test_a_consul_ca_file_that_is_missing_or_no_certificate_is_refused(tmp_path, content, error):
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=f"SHOPMESH_CONSUL_CA_FILE: .*{error}"):
        settings(SHOPMESH_CONSUL_CA_FILE=str(path))


def test_bind_host_can_be_overridden():
    assert settings(SHOPMESH_BIND_HOST="0.0.0.0").bind_host == "0.0.0.0"


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ("{", "SHOPMESH_REGISTRATION is not valid JSON"),
        ('["orders-1"]', "SHOPMESH_REGISTRATION must be a JSON object"),
        ('{"Name": "orders"}', "SHOPMESH_REGISTRATION registers None, not this instance"),
        ('{"ID": "orders-2"}', "SHOPMESH_REGISTRATION registers 'orders-2', not this instance"),
    ],
)
def test_a_registration_must_be_a_json_object_for_this_instance(raw, error):
    with pytest.raises(ConfigError, match=error):
        settings(SHOPMESH_REGISTRATION=raw)


def test_database_password_stays_out_of_the_repr():
    assert "pw@" not in repr(settings())


def test_an_instance_the_platform_registers_reads_no_registration():
    # consul-k8s registers a pod's service itself (docs/kubernetes.md): the chart turns the
    # instance's own registration off, and hands it no document.
    s = settings(SHOPMESH_CONSUL_REGISTER="false", SHOPMESH_REGISTRATION=None)
    assert s.registration is None
    assert settings(SHOPMESH_CONSUL_REGISTER="true").registration == json.loads(
        ENV["SHOPMESH_REGISTRATION"]
    )


def test_registration_is_on_unless_turned_off_and_the_flag_is_checked():
    assert settings().registration is not None
    with pytest.raises(ConfigError, match="SHOPMESH_REGISTRATION is required"):
        settings(SHOPMESH_REGISTRATION=None)
    with pytest.raises(ConfigError, match="SHOPMESH_CONSUL_REGISTER must be true or false"):
        settings(SHOPMESH_CONSUL_REGISTER="no")
