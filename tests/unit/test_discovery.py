"""mDNS discovery: the pure parts (names, interfaces, TXT parsing, address choice).
The real-mDNS tests are in tests/integration/test_e2e_discovery.py."""
from __future__ import annotations

import ipaddress

import pytest
from zeroconf import InterfaceChoice, service_type_name

from mesh.discovery.mdns import (
    SERVICE_TYPE,
    Discovery,
    MalformedRecord,
    choose_address,
    compatible,
    instance_name,
    interfaces_for_bind,
    is_loopback_only,
    parse_peer,
    split_endpoint,
)
from mesh.wire.protocol import PROTOCOL_VERSION


def _noop(node_id: str, endpoint: str, props: dict[str, str]) -> None:
    pass


@pytest.mark.parametrize("endpoint, expected", [
    ("tcp://127.0.0.1:7700", ["127.0.0.1"]),
    ("tcp://127.0.0.5:7700", ["127.0.0.1"]),
    ("tcp://localhost:7700", ["127.0.0.1"]),
    ("tcp://[::1]:7700", ["127.0.0.1"]),
    ("tcp://10.200.0.1:7700", ["10.200.0.1"]),
    ("tcp://0.0.0.0:7700", InterfaceChoice.All),
    ("tcp://*:7700", InterfaceChoice.All),
    ("tcp://[::]:7700", InterfaceChoice.All),
])
def test_interfaces_follow_the_bind_address(endpoint: str, expected: object) -> None:
    assert interfaces_for_bind(endpoint) == expected


def test_loopback_only() -> None:
    assert is_loopback_only(["127.0.0.1"])
    assert not is_loopback_only(["127.0.0.1", "10.0.0.1"])
    assert not is_loopback_only(InterfaceChoice.All)
    assert not is_loopback_only([])


@pytest.mark.parametrize("endpoint, expected", [
    ("tcp://127.0.0.1:7700", ("127.0.0.1", "7700")),
    ("tcp://[fd00::1]:80", ("fd00::1", "80")),
    ("tcp://*:*", ("*", "*")),
])
def test_split_endpoint(endpoint: str, expected: tuple[str, str]) -> None:
    assert split_endpoint(endpoint) == expected


@pytest.mark.parametrize("bad", ["127.0.0.1:7700", "tcp://:7700", "tcp://host", "udp://h:1", ""])
def test_split_endpoint_refuses(bad: str) -> None:
    with pytest.raises(ValueError):
        split_endpoint(bad)


@pytest.mark.parametrize("node_id", [
    "node-1", "myhost-1234", "a" * 63, "a" * 64, "Host.Example.com-42", "Node", "node",
    "über-knoten", "x y/z", "_leading", "-", "..", "日本",
])
def test_instance_names_are_legal_dns_sd_labels(node_id: str) -> None:
    label = instance_name(node_id)
    assert 0 < len(label.encode()) <= 63
    assert "." not in label and label[0].isalnum()
    # zeroconf accepts it as an instance of our type
    assert service_type_name(f"{label}.{SERVICE_TYPE}") == SERVICE_TYPE
    assert instance_name(node_id) == label          # deterministic: a restart keeps it


def test_plain_ids_are_kept_and_others_stay_distinct() -> None:
    assert instance_name("node-1") == "node-1"
    assert instance_name("myhost-1234") == "myhost-1234"
    ids = ["Node", "node", "a.b", "a-b", "a_b", "x" * 64, "x" * 65, "a b", "a/b"]
    labels = {instance_name(i).lower() for i in ids}   # DNS compares case-insensitively
    assert len(labels) == len(ids)


def _txt(**kw: object) -> dict[bytes, bytes | None]:
    return {k.encode(): None if v is None else v if isinstance(v, bytes) else str(v).encode()
            for k, v in kw.items()}


def test_parse_peer_specific_endpoint_is_used_verbatim() -> None:
    p = parse_peer(_txt(id="n1", proto=1, ep="tcp://127.0.0.1:7701", boot="ab", seq=0),
                   ["127.0.0.1"], loopback_only=True)
    assert (p.node_id, p.endpoint) == ("n1", "tcp://127.0.0.1:7701")
    assert p.props == {"id": "n1", "proto": "1", "ep": "tcp://127.0.0.1:7701", "boot": "ab", "seq": "0"}


def test_parse_peer_wildcard_endpoint_picks_an_address() -> None:
    raw = _txt(id="n1", proto=1, ep="tcp://0.0.0.0:7701")
    addrs = ["127.0.0.1", "192.0.2.7", "10.200.0.3"]
    assert parse_peer(raw, addrs, loopback_only=True).endpoint == "tcp://127.0.0.1:7701"
    nets = [ipaddress.IPv4Network("10.200.0.0/24")]
    assert parse_peer(raw, addrs, loopback_only=False, local_nets=nets).endpoint == "tcp://10.200.0.3:7701"
    assert parse_peer(raw, addrs, loopback_only=False).endpoint == "tcp://192.0.2.7:7701"


def test_choose_address() -> None:
    assert choose_address([], True) is None
    assert choose_address(["127.0.0.1"], False) == "127.0.0.1"     # same host, nothing else
    assert choose_address(["10.0.0.1"], True) == "10.0.0.1"
    assert choose_address(["fd00::1"], False) == "fd00::1"
    assert choose_address(["garbage"], False) is None


@pytest.mark.parametrize("raw, why", [
    (_txt(proto=1, ep="tcp://127.0.0.1:1"), "no 'id'"),
    (_txt(id="", proto=1, ep="tcp://127.0.0.1:1"), "no 'id'"),
    (_txt(id=b"\xff\xfe", proto=1, ep="tcp://127.0.0.1:1"), "not UTF-8"),
    (_txt(id="n", proto="one", ep="tcp://127.0.0.1:1"), "'proto'"),
    (_txt(id="n", ep="tcp://127.0.0.1:1"), "'proto'"),
    (_txt(id="n", proto=1), "bad 'ep'"),
    (_txt(id="n", proto=1, ep="tcp://127.0.0.1:0"), "bad 'ep'"),
    (_txt(id="n", proto=1, ep="tcp://127.0.0.1:*"), "bad 'ep'"),
    (_txt(id="n", proto=1, ep="http://x"), "bad 'ep'"),
    (_txt(id="n", proto=1, ep=None), "bad 'ep'"),
    ({b"\xff": b"1", b"id": b"n"}, "not UTF-8"),
])
def test_parse_peer_refuses_malformed_records(raw: dict[bytes, bytes | None], why: str) -> None:
    with pytest.raises(MalformedRecord, match=why):
        parse_peer(raw, ["127.0.0.1"], loopback_only=True)


def test_wildcard_without_addresses_is_malformed() -> None:
    with pytest.raises(MalformedRecord, match="no address"):
        parse_peer(_txt(id="n", proto=1, ep="tcp://*:7700"), [], loopback_only=True)


def test_compatible() -> None:
    assert compatible({"proto": str(PROTOCOL_VERSION)})
    assert not compatible({"proto": str(PROTOCOL_VERSION + 1)})
    assert not compatible({"proto": "0"})
    assert not compatible({})


def test_discovery_validates_its_arguments() -> None:
    with pytest.raises(ValueError, match="empty"):
        Discovery("", "tcp://127.0.0.1:7700", _noop)
    with pytest.raises(ValueError, match="port"):
        Discovery("n", "tcp://127.0.0.1:*", _noop)
    with pytest.raises(ValueError, match="too long"):
        Discovery("n" * 300, "tcp://127.0.0.1:7700", _noop)
    with pytest.raises(ValueError, match="reserved"):
        Discovery("n", "tcp://127.0.0.1:7700", _noop, props={"id": "x"})
    d = Discovery("Some.Host-1", "tcp://127.0.0.1:7700", _noop, props={"version": "0.1"})
    assert d.interfaces == ["127.0.0.1"]
    assert d.service_name == f"{instance_name('Some.Host-1')}.{SERVICE_TYPE}"
    assert not d.running
