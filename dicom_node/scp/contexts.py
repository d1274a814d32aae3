"""The presentation contexts the node proposes on the associations it opens
(C-MOVE destinations, storage commitment reports), and which transfer syntax an
accepted context lets an instance travel in without transcoding.

An acceptor picks at most one transfer syntax per proposed context, by its own
preference (PS3.8 9.3.3.2; pynetdicom, DCMTK and Orthanc all do). A context
listing a SOP class's stored syntaxes and the uncompressed ones gets one of
them, and every instance stored in another is then unsendable. So, as a careful
SCU proposes them:

- per (SOP class, stored transfer syntax) pair a context with that syntax
  alone, so the destination accepts it or not for itself, and an instance it
  accepts goes as stored (byte for byte), whatever the destination prefers;
- per SOP class a *fallback* context: Explicit VR Little Endian, Implicit VR
  Little Endian (every SCP of a storage class accepts Implicit, PS3.5 10.1):
  what an instance is transcoded to when its own syntax was refused.

Presentation context IDs are the odd numbers 1..255 (PS3.8 9.3.2.2): 128
contexts at most. Fallbacks come first (without one a SOP class cannot be sent
at all), by descending instance count; then the pairs, by descending instance
count. An instance whose pair did not fit goes through its class's fallback,
re-encoded or transcoded. A SOP class beyond the 128th gets no context: its
instances fail (pynetdicom's C-MOVE loop opens one association and counts only
the sub-operations sent on it, so a second association could not be counted in
the final response).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_context
from pynetdicom.presentation import PresentationContext

MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: odd presentation context IDs 1..255
# the fallback of every SOP class, in the order the node prefers them
FALLBACK_SYNTAXES = (str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian))
# why an instance of a SOP class without a context fails (audit, ErrorComment)
BEYOND_LIMIT = f"more than {MAX_CONTEXTS} SOP classes"


@dataclass(frozen=True)
class ContextPlan:
    """What one association proposes.

    ``contexts``: the proposal. ``without_context``: SOP classes left out (more
    than 128 in one retrieve). ``without_pair``: the (SOP class, transfer
    syntax) pairs that got no context of their own (their instances are sent
    through the fallback, re-encoded or transcoded)."""

    contexts: list[PresentationContext]
    without_context: frozenset[str]
    without_pair: frozenset[tuple[str, str]]


def plan_contexts(
    pairs: Mapping[tuple[str, str], int], *, limit: int = MAX_CONTEXTS
) -> ContextPlan:
    """The contexts for instances counted per (SOP class, stored transfer syntax)."""
    per_class: Counter[str] = Counter()
    for (sop_class, _), count in pairs.items():
        per_class[sop_class] += count
    classes = sorted(per_class, key=lambda uid: (-per_class[uid], uid))
    with_fallback = classes[:limit]
    contexts = [build_context(uid, list(FALLBACK_SYNTAXES)) for uid in with_fallback]
    sendable = set(with_fallback)
    own = sorted(
        (pair for pair in pairs if pair[0] in sendable),
        key=lambda pair: (-pairs[pair], pair),
    )
    room = limit - len(contexts)
    contexts.extend(build_context(sop_class, [syntax]) for sop_class, syntax in own[:room])
    return ContextPlan(
        contexts=contexts,
        without_context=frozenset(classes[limit:]),
        without_pair=frozenset(own[room:]),
    )


def service_contexts(sop_classes: Iterable[str]) -> list[PresentationContext]:
    """The proposal for a service without stored instances (storage commitment's
    N-EVENT-REPORT): the fallback context of each SOP class."""
    return [build_context(str(uid), list(FALLBACK_SYNTAXES)) for uid in sop_classes]


def converts_freely(stored: str, accepted: str) -> bool:
    """Whether pynetdicom sends a data set read in ``stored`` through a context
    accepted with ``accepted`` by encoding it again, pixel data untouched:
    explicit <-> implicit VR and deflated <-> inflated, same byte order, neither
    compressed (``Association._get_valid_context``)."""
    if stored == accepted:
        return True
    have, want = _uncompressed(stored), _uncompressed(accepted)
    return have is not None and want is not None and have == want


def _uncompressed(syntax: str) -> bool | None:
    """Its byte order (True: little endian) when ``syntax`` is a native one
    (Explicit/Implicit VR Little Endian, Deflated, Explicit VR Big Endian),
    None when it is compressed or not a transfer syntax pydicom knows."""
    uid = UID(syntax)
    try:
        return None if uid.is_compressed else uid.is_little_endian
    except ValueError:  # not a known transfer syntax
        return None
