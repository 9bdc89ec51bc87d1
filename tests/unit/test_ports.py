import socket

import pytest

from mesh.runtime import ports


def test_the_ports_come_from_above_the_ephemeral_range_when_there_are_enough():
    assert ports.candidates((32768, 60999)) == range(61000, 65536)


def test_the_ports_come_from_below_the_ephemeral_range_when_it_reaches_the_top():
    assert ports.candidates((40000, 65535)) == range(30000, 40000)


def test_a_range_that_leaves_too_few_ports_is_refused_with_the_fix():
    with pytest.raises(RuntimeError, match="ip_local_port_range"):
        ports.candidates((30500, 65000))


def test_a_free_port_is_outside_the_ephemeral_range_bindable_and_never_handed_out_twice():
    low, high = ports._ephemeral_range()
    handed = [ports.free_port(udp_too=True) for _ in range(50)]
    assert len(set(handed)) == len(handed)
    for port in handed:
        assert not low <= port <= high
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", port))
            udp.bind(("127.0.0.1", port))


def test_a_port_someone_listens_on_is_never_handed_out(monkeypatch):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        taken = listener.getsockname()[1]
        listener.listen()
        monkeypatch.setattr(ports, "candidates", lambda _: range(taken, taken + 1))
        with pytest.raises(RuntimeError, match="no free loopback port"):
            ports.free_port()
