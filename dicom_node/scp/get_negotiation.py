"""Which transfer syntax the node accepts for the storage contexts of a C-GET
requester (PS3.4 C.4.3: the C-STORE sub-operations go back on the requester's
association, the requester taking the SCP role by role selection, PS3.7 D.3.3.4).

pynetdicom's acceptor takes, within each proposed context, the first syntax of
*its own* list that the requester offers. For ordinary C-STOREs to the node
that list prefers lossless compressed, then uncompressed syntaxes (scp/server.py:
a modality's image is kept as sent, never made lossy). For a C-GET requester
that order is wrong: ``getscu +xy`` offers JPEG Baseline and Explicit VR Little
Endian in one context; the node took Explicit VR Little Endian and could not
send its stored JPEG.

So, at EVT_REQUESTED (in the association's thread, before negotiation), for
each storage SOP class the requester proposes the SCP role for, this
association's own copy of the supported contexts (``SharedUidContexts`` makes
one per association) is reordered:

1. the syntaxes the store holds for that SOP class, each only if every
   instance the store holds for the class can travel in it (as stored,
   re-encoded, or transcoded without loss: a lossy syntax comes first only
   when the class is held in that syntax alone); those that leave the fewest
   of the other held syntaxes to transcode first, then in the node's order;
2. Explicit VR Little Endian, Implicit VR Little Endian;
3. the rest in the node's order (lossless first).

A requester that keeps the SCU role for the class too (it may also store to
the node on this association) never gets a lossy syntax moved up. Ordinary
C-STORE negotiation (no SCP role proposed) is left exactly as it is. With
``accept_unknown_sop_classes`` pynetdicom accepts a storage context's first
proposed syntax whatever the node's list says; then the proposed list itself
is put in that order.

What the store holds comes from the ``held_syntaxes`` table (db/held_syntaxes.py):
every (SOP class, transfer syntax) pair, exact, written with the first
instance of a pair in its ingest transaction, read in one query for the
classes of this association. It holds no counts (the order among held syntaxes
is by transcodings, not by instances), and a pair stays after its last instance
is gone: then a lossy syntax is no longer moved up, the native syntaxes come
first, and every instance can still be sent. Left open: an instance of the
class in another syntax stored between this negotiation and the C-GET request
was not seen here; if it cannot travel in the syntax accepted, its
sub-operation fails ("no accepted transfer syntax it can be transcoded to").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence

from pydicom.uid import UID
from pynetdicom import _config
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext

from dicom_node.domain.transcode import is_lossy
from dicom_node.log_limit import LogLimiter
from dicom_node.scp.contexts import FALLBACK_SYNTAXES
from dicom_node.scp.delivery import TRANSCODED, choose_route

log = logging.getLogger("dicom_node.scp")
_lines = LogLimiter(log)


def preferred_syntaxes(
    held: Collection[str],
    supported: Sequence[str],
    *,
    transcode: bool,
    lossy_first: bool = True,
) -> list[str]:
    """``supported`` in the order the node prefers to accept for a SOP class the
    store holds in the transfer syntaxes ``held``."""
    routes = {
        syntax: [choose_route(other, [syntax], transcode=transcode).how for other in held]
        for syntax in held
        if syntax in supported and (lossy_first or not is_lossy(syntax))
    }
    # every held instance can travel in it; the fewest transcodings, then the node's order
    first = sorted(
        (syntax for syntax, hows in routes.items() if None not in hows),
        key=lambda syntax: (routes[syntax].count(TRANSCODED), supported.index(syntax)),
    )
    order = [*first, *(uid for uid in FALLBACK_SYNTAXES if uid not in first)]
    return [
        *(uid for uid in order if uid in supported),
        *(uid for uid in supported if uid not in order),
    ]


class GetNegotiation:
    """The EVT_REQUESTED handler that reorders a C-GET requester's storage
    syntaxes; ``held(sop_classes)`` gives the transfer syntaxes the store holds
    each of those classes in (services/query/retrieve.py HeldSyntaxes: one query)."""

    def __init__(
        self,
        held: Callable[[Collection[str]], Mapping[str, Collection[str]]],
        *,
        transcode: bool,
    ) -> None:
        self._held = held
        self._transcode = transcode

    def requested(self, event: Event) -> None:
        assoc = event.assoc
        if assoc.is_rejected or assoc.is_aborted:
            return  # refused by an earlier handler (admission)
        getters = {
            str(uid): item.scu_role is True
            for uid, item in assoc.requestor.role_selection.items()
            if item.scp_role
        }
        if not getters:
            return  # no C-GET storage: ordinary negotiation, untouched
        # pynetdicom's unrestricted storage takes a context's first proposed syntax
        request = assoc.requestor.primitive  # the A-ASSOCIATE-RQ (set before EVT_REQUESTED)
        proposed = (
            request.presentation_context_definition_list
            if _config.UNRESTRICTED_STORAGE_SERVICE and request is not None
            else []
        )
        try:
            held = self._held(list(getters))  # one query for every class of this association
            self._reorder(assoc.acceptor.supported_contexts, proposed, getters, held)
        except Exception as exc:  # the database: negotiation goes on in the usual order
            _lines.warning(
                ("get-negotiation", type(exc).__name__),
                "C-GET syntax preference not applied (%s): the default order is used",
                type(exc).__name__,
            )

    def _reorder(
        self,
        supported: list[PresentationContext],
        proposed: list[PresentationContext],
        getters: dict[str, bool],
        held: Mapping[str, Collection[str]],
    ) -> None:
        offered: dict[str, list[PresentationContext]] = {}
        for context in proposed:
            offered.setdefault(str(context.abstract_syntax), []).append(context)
        for context in supported:
            sop_class = str(context.abstract_syntax)
            if sop_class not in getters or not context.scp_role:
                continue
            order: list[str | bytes | UID] = list(
                preferred_syntaxes(
                    held.get(sop_class, ()),
                    [str(uid) for uid in context.transfer_syntax],
                    transcode=self._transcode,
                    lossy_first=not getters[sop_class],
                )
            )
            context.transfer_syntax = order
            rank = {str(uid): index for index, uid in enumerate(order)}
            for theirs in offered.get(sop_class, []):
                theirs.transfer_syntax = sorted(
                    theirs.transfer_syntax, key=lambda uid: rank.get(str(uid), len(rank))
                )
