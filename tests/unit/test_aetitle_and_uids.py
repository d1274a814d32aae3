from __future__ import annotations

import pytest

from dicom_node.domain.aetitle import Peer, parse_peer, parse_peer_list
from dicom_node.domain.errors import InvalidValue
from dicom_node.domain.names import fold_person_name
from dicom_node.domain.uids import new_uid
from dicom_node.domain.vr import is_valid_uid, validate_ae_title, validate_uid


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("DICOM_NODE", "DICOM_NODE"),
        ("  PACS  ", "PACS"),
        ("A" * 16, "A" * 16),
        ("ct-1 main", "ct-1 main"),
    ],
)
def test_valid_ae_titles_are_returned_without_padding(given: str, expected: str) -> None:
    assert validate_ae_title(given) == expected


@pytest.mark.parametrize("bad", ["", "    ", "A" * 17, "BACK\\SLASH", "TAB\tX", "CAFÉ"])
def test_invalid_ae_titles_are_refused(bad: str) -> None:
    with pytest.raises(InvalidValue):
        validate_ae_title(bad)


@pytest.mark.parametrize(
    ("text", "peer"),
    [
        ("PACS@10.1.2.3:104", Peer("PACS", "10.1.2.3", 104)),
        (" WS1@ws1.local:11112 ", Peer("WS1", "ws1.local", 11112)),
        ("V6@[::1]:4242", Peer("V6", "::1", 4242)),
    ],
)
def test_peers_parse_from_ae_at_host_colon_port(text: str, peer: Peer) -> None:
    assert parse_peer(text) == peer


@pytest.mark.parametrize(
    "bad", ["PACS10.1.2.3:104", "PACS@10.1.2.3", "PACS@:104", "PACS@h:0", "PACS@h:70000", "@h:1"]
)
def test_malformed_peers_are_refused(bad: str) -> None:
    with pytest.raises(InvalidValue):
        parse_peer(bad)


def test_peer_list_refuses_the_same_ae_twice() -> None:
    assert [p.ae_title for p in parse_peer_list("A@h:1,B@h:2,")] == ["A", "B"]
    with pytest.raises(InvalidValue, match="twice"):
        parse_peer_list("A@h:1,A@h:2")


def test_peer_renders_back_to_its_configuration_form() -> None:
    assert str(Peer("V6", "::1", 104)) == "V6@[::1]:104"
    assert parse_peer(str(Peer("P", "pacs", 104))) == Peer("P", "pacs", 104)


@pytest.mark.parametrize(
    "uid", ["1.2.840.10008.1.2", "0.1", "2.25.329800735698586629295641978511506172918", "1"]
)
def test_valid_uids_pass(uid: str) -> None:
    assert is_valid_uid(uid)
    assert validate_uid(uid + "\x00") == uid


@pytest.mark.parametrize(
    "uid",
    ["", "1..2", "1.02", ".1", "1.", "1.2.a", "../../etc/passwd", "1/2", "1." + "1" * 63, " 1.2"],
)
def test_invalid_uids_fail_so_they_never_reach_a_path(uid: str) -> None:
    assert not is_valid_uid(uid)
    with pytest.raises(InvalidValue):
        validate_uid(uid)


def test_new_uids_are_unique_valid_and_under_the_uuid_root() -> None:
    uids = {new_uid() for _ in range(1000)}
    assert len(uids) == 1000
    assert all(uid.startswith("2.25.") and is_valid_uid(uid) for uid in uids)


def test_person_names_fold_case_and_unicode_composition() -> None:
    assert fold_person_name("MÜLLER^Hans") == fold_person_name("müller^HANS")
    assert fold_person_name("Mu\u0308ller") == fold_person_name("Müller")
    assert fold_person_name("山田^太郎") == "山田^太郎"
