"""Per instance, how a retrieve sends it on the peer's accepted contexts
(scp/delivery.py), and which syntax the node accepts for a C-GET requester's
storage contexts (scp/get_negotiation.py): with the codecs installed here."""

from __future__ import annotations

from pydicom.uid import (
    JPEG2000,
    MPEG2MPML,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

from dicom_node.scp.delivery import (
    AS_STORED,
    CONVERTED,
    NO_CONTEXT,
    NO_TARGET,
    TRANSCODED,
    TRANSCODING_OFF,
    Tally,
    choose_route,
)
from dicom_node.scp.get_negotiation import preferred_syntaxes
from dicom_node.scp.server import STORAGE_TRANSFER_SYNTAXES

UNCOMPRESSED = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


def test_the_stored_syntax_when_accepted() -> None:
    assert choose_route(JPEG2000, [JPEG2000], transcode=True).how == AS_STORED
    assert choose_route(JPEG2000, [*UNCOMPRESSED, JPEG2000], transcode=False).how == AS_STORED


def test_native_syntaxes_are_re_encoded_by_pynetdicom_not_transcoded() -> None:
    for stored in (ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian):
        assert choose_route(stored, [ExplicitVRLittleEndian], transcode=False).how == CONVERTED
    # no byte order conversion in pynetdicom: big endian is transcoded
    route = choose_route(ExplicitVRBigEndian, UNCOMPRESSED, transcode=True)
    assert (route.how, route.target) == (TRANSCODED, ExplicitVRLittleEndian)


def test_compressed_to_an_uncompressed_destination_is_decoded() -> None:
    for stored in (JPEG2000Lossless, JPEG2000, JPEGBaseline8Bit, RLELossless, JPEGLSLossless):
        route = choose_route(stored, [ImplicitVRLittleEndian], transcode=True)
        assert (route.how, route.target) == (TRANSCODED, ExplicitVRLittleEndian), stored


def test_re_encoded_losslessly_never_lossily() -> None:
    route = choose_route(JPEGLSLossless, [JPEGBaseline8Bit, RLELossless], transcode=True)
    assert (route.how, route.target) == (TRANSCODED, RLELossless)
    assert choose_route(ExplicitVRLittleEndian, [JPEGBaseline8Bit], transcode=True).reason == (
        NO_TARGET
    )


def test_failures_say_why() -> None:
    assert choose_route(JPEG2000, [], transcode=True).reason == NO_CONTEXT
    assert choose_route(JPEG2000, UNCOMPRESSED, transcode=False).reason == TRANSCODING_OFF
    assert choose_route(MPEG2MPML, UNCOMPRESSED, transcode=True).reason == (
        f"no decoder for {MPEG2MPML}"
    )


def test_the_tally_counts_what_the_node_left_out_with_the_peer_s_refusals() -> None:
    tally = Tally(4)
    tally.offered(AS_STORED)
    tally.offered(AS_STORED)
    tally.answered("1", 0x0000)
    tally.answered("2", 0xA700)
    tally.fail("3", NO_CONTEXT)
    tally.fail("4", NO_CONTEXT)
    assert list(tally.failed_uids().FailedSOPInstanceUIDList) == ["2", "3", "4"]
    assert tally.result().counts["failed"] == 3
    assert tally.summary() == f"3 failed, 2: {NO_CONTEXT}"

    nothing = Tally(1)
    nothing.fail("9", TRANSCODING_OFF)
    assert nothing.summary() == f"1 failed: {TRANSCODING_OFF}"


def test_warnings_count_as_delivered() -> None:
    tally = Tally(2)
    tally.offered(AS_STORED)
    tally.answered("1", 0xB000)  # coercion of data elements
    tally.fail("2", NO_CONTEXT)
    assert (tally.counts["warning"], tally.counts["failed"]) == (1, 1)


def _order(held: set[str], *, lossy_first: bool = True) -> list[str]:
    return preferred_syntaxes(
        held, list(STORAGE_TRANSFER_SYNTAXES), transcode=True, lossy_first=lossy_first
    )


def test_a_c_get_requester_gets_the_syntax_the_store_holds_first() -> None:
    assert _order({JPEGBaseline8Bit})[:3] == [JPEGBaseline8Bit, *UNCOMPRESSED]
    assert _order({JPEG2000Lossless, ExplicitVRLittleEndian})[:2] == [
        JPEG2000Lossless,  # the uncompressed ones can be encoded into it: the node's order
        ExplicitVRLittleEndian,
    ]


def test_among_held_syntaxes_the_one_leaving_the_fewest_to_transcode_first() -> None:
    # Explicit: the JPEG 2000 ones decoded, Implicit re-encoded (no pixel work);
    # JPEG 2000 lossless: both native ones encoded
    held = {JPEG2000Lossless, ExplicitVRLittleEndian, ImplicitVRLittleEndian}
    order = _order(held)
    assert order[:2] == UNCOMPRESSED and order[2] == JPEG2000Lossless


def test_a_lossy_syntax_first_only_when_every_held_instance_is_in_it() -> None:
    # the JPEG 2000 lossless instances could not be sent in JPEG Baseline
    order = _order({JPEGBaseline8Bit, JPEG2000Lossless})
    assert order[:3] == [JPEG2000Lossless, *UNCOMPRESSED]
    assert order.index(JPEGBaseline8Bit) > 2


def test_nothing_held_or_a_requester_that_also_stores() -> None:
    assert _order(set())[:2] == UNCOMPRESSED
    assert _order({JPEGBaseline8Bit}, lossy_first=False)[:2] == UNCOMPRESSED
    # the whole list stays, once each
    assert sorted(_order({JPEGBaseline8Bit})) == sorted(STORAGE_TRANSFER_SYNTAXES)


def test_a_syntax_pydicom_does_not_know_is_never_guessed_at() -> None:
    route = choose_route("1.2.3.4", [ExplicitVRLittleEndian], transcode=True)
    assert route.reason == "no decoder for 1.2.3.4"
