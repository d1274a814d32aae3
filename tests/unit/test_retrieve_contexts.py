"""The presentation contexts an outgoing association proposes (scp/contexts.py):
one per (SOP class, stored syntax) pair plus an uncompressed fallback per SOP
class, within PS3.8's 128; and the pynetdicom internals the retrieve relies on."""

from __future__ import annotations

import inspect

from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.presentation import negotiate_as_acceptor, negotiate_unrestricted

from dicom_node.scp.contexts import (
    MAX_CONTEXTS,
    converts_freely,
    plan_contexts,
    service_contexts,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
SC = "1.2.840.10008.5.1.4.1.1.7"
FALLBACK = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


def _proposed(plan: object) -> list[tuple[str, list[str]]]:
    return [
        (str(cx.abstract_syntax), [str(ts) for ts in cx.transfer_syntax])
        for cx in plan.contexts  # type: ignore[attr-defined]
    ]


def test_a_fallback_per_sop_class_and_a_context_per_stored_syntax() -> None:
    plan = plan_contexts(
        {
            (CT, JPEG2000Lossless): 5,
            (CT, ExplicitVRLittleEndian): 3,
            (CT, ImplicitVRLittleEndian): 1,
            (MR, JPEGLSLossless): 2,
            (MR, DeflatedExplicitVRLittleEndian): 4,
        }
    )
    assert _proposed(plan) == [
        (CT, FALLBACK),  # 9 instances
        (MR, FALLBACK),  # 6
        (CT, [JPEG2000Lossless]),  # then the pairs by count
        (MR, [DeflatedExplicitVRLittleEndian]),
        # uncompressed ones too: the destination's choice within the fallback
        # (pynetdicom's acceptor prefers Implicit) would not keep them as stored
        (CT, [ExplicitVRLittleEndian]),
        (MR, [JPEGLSLossless]),
        (CT, [ImplicitVRLittleEndian]),
    ]
    assert plan.without_context == frozenset()
    assert plan.without_pair == frozenset()


def test_the_budget_takes_every_fallback_first_then_the_biggest_pairs() -> None:
    pairs = {}
    # 100 SOP classes, each stored in JPEG Baseline (count 100 + i) and RLE (i)
    for i in range(100):
        pairs[(f"1.2.3.{i}", JPEGBaseline8Bit)] = 100 + i
        pairs[(f"1.2.3.{i}", RLELossless)] = 1 + i
    plan = plan_contexts(pairs)
    assert len(plan.contexts) == MAX_CONTEXTS
    fallbacks = [cx for cx in plan.contexts if len(cx.transfer_syntax) == 2]
    assert len(fallbacks) == 100  # every class can be sent
    pairs_in = {(str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in plan.contexts[100:]}
    assert len(pairs_in) == 28
    # the 28 biggest pairs: the JPEG Baseline ones of the classes with most instances
    assert pairs_in == {(f"1.2.3.{i}", JPEGBaseline8Bit) for i in range(72, 100)}
    assert len(plan.without_pair) == 200 - 28
    assert plan.without_context == frozenset()


def test_beyond_128_sop_classes_the_smallest_get_no_context() -> None:
    pairs = {(f"1.2.4.{i}", ExplicitVRLittleEndian): 1000 - i for i in range(130)}
    plan = plan_contexts(pairs)
    assert len(plan.contexts) == MAX_CONTEXTS
    assert plan.without_context == {"1.2.4.128", "1.2.4.129"}
    assert all(len(cx.transfer_syntax) == 2 for cx in plan.contexts)
    assert len(plan.without_pair) == 128  # their Explicit VR pairs: the fallback does


def test_context_ids_fit_and_the_plan_is_deterministic() -> None:
    pairs = {(SC, JPEG2000Lossless): 2, (CT, JPEG2000Lossless): 2, (SC, RLELossless): 2}
    assert _proposed(plan_contexts(pairs)) == _proposed(
        plan_contexts(dict(reversed(pairs.items())))
    )


def test_services_without_instances_propose_the_fallback() -> None:
    commitment = "1.2.840.10008.1.20.1"
    assert [
        (str(cx.abstract_syntax), cx.transfer_syntax) for cx in service_contexts([commitment])
    ] == [(commitment, FALLBACK)]


def test_what_pynetdicom_re_encodes_without_transcoding() -> None:
    assert converts_freely(ImplicitVRLittleEndian, ExplicitVRLittleEndian)
    assert converts_freely(DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian)
    assert converts_freely(JPEG2000Lossless, JPEG2000Lossless)
    assert not converts_freely(ExplicitVRBigEndian, ExplicitVRLittleEndian)  # byte order
    assert not converts_freely(JPEG2000Lossless, ExplicitVRLittleEndian)
    assert not converts_freely(ExplicitVRLittleEndian, RLELossless)
    assert not converts_freely("1.2.3.4", ExplicitVRLittleEndian)  # not a syntax pydicom knows


# --------------------------------------------------------------------------- pynetdicom internals
# The retrieve (scp/delivery.py, scp/retrieve.py, scp/get_negotiation.py) relies
# on these: an upgrade that changes them fails here, not in production.


def test_pynetdicom_still_picks_the_exact_context_first_and_converts_only_native_syntaxes() -> None:
    source = inspect.getsource(Association._get_valid_context)
    assert source.index("if tr_syntax == cx_syntax") < source.index("matches.append(cx)")
    assert "if tr_syntax.is_compressed or cx_syntax.is_compressed" in source
    assert "tr_syntax.is_little_endian != cx_syntax.is_little_endian" in source
    store = inspect.getsource(Association.send_c_store)
    assert "dataset.file_meta.TransferSyntaxUID" in store  # the data set's own syntax


def test_pynetdicom_still_lets_evt_requested_change_the_acceptor_s_contexts() -> None:
    reactor = inspect.getsource(Association.run_reactor)
    assert reactor.index("evt.trigger(self, evt.EVT_REQUESTED") < reactor.index(
        "self.acse.negotiate_association()"
    )
    acceptor = inspect.getsource(negotiate_as_acceptor)
    assert "for tr_syntax in ac_context.transfer_syntax:" in acceptor  # the acceptor's order
    unrestricted = inspect.getsource(negotiate_unrestricted)
    assert "cx.transfer_syntax = [rcx.transfer_syntax[0]]" in unrestricted  # the requestor's


def test_pynetdicom_still_signals_a_dimse_message_before_a_sender_can_read_it() -> None:
    source = inspect.getsource(DIMSEServiceProvider.receive_primitive)
    assert source.index("evt.EVT_DIMSE_RECV") < source.index("self.msg_queue.put(")
