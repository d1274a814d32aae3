"""The SCP's contexts are copied per association without rebuilding every UID;
the pynetdicom internals the node's association server relies on are there."""

from __future__ import annotations

import copy
import inspect

from pynetdicom.acse import ACSE
from pynetdicom.association import Association
from pynetdicom.transport import AssociationServer, RequestHandler, ThreadedAssociationServer

from dicom_node.scp.server import NodeAssociationServer, SharedUidContexts, build_ae
from dicom_node.settings import Settings


def test_each_association_gets_its_own_contexts_sharing_the_immutable_uids() -> None:
    contexts = build_ae(Settings(database_url="sqlite:////tmp/unused.sqlite3")).supported_contexts
    shared = SharedUidContexts(contexts)
    copied = copy.deepcopy(shared)
    assert len(copied) == len(contexts) > 100
    for original, clone in zip(contexts, copied, strict=True):
        assert clone is not original
        assert clone.transfer_syntax == original.transfer_syntax
        assert clone._transfer_syntax is not original._transfer_syntax
        # the same UID objects: nothing re-parsed or re-validated
        assert clone.abstract_syntax is original.abstract_syntax
        assert clone.transfer_syntax[0] is original.transfer_syntax[0]
        assert (clone.scu_role, clone.scp_role) == (original.scu_role, original.scp_role)


# --------------------------------------------------------------------------- server internals
# NodeAssociationServer (scp/server.py) replaces or relies on these pynetdicom
# internals: an upgrade that changes them fails here, not in production.


def test_pynetdicom_still_handshakes_on_the_accept_thread_only_with_its_ssl_context() -> None:
    source = inspect.getsource(AssociationServer.get_request)
    assert "self.ssl_context.wrap_socket" in source  # why the node never passes one
    assert NodeAssociationServer.get_request is not AssociationServer.get_request


def test_pynetdicom_still_opens_the_association_on_the_connection_thread() -> None:
    """The connection's pending place passes to its association at EVT_CONN_OPEN,
    on the same thread that runs finish_request (ConnectionGate.serving)."""
    handle = inspect.getsource(RequestHandler.handle)
    assert "self._create_association()" in handle
    assert "evt.trigger(assoc, evt.EVT_CONN_OPEN" in handle
    assert handle.index("EVT_CONN_OPEN") < handle.index("assoc.start()")
    thread = inspect.getsource(ThreadedAssociationServer.process_request_thread)
    assert "self.finish_request(request, client_address)" in thread


def test_pynetdicom_still_counts_every_connection_thread_and_lets_evt_requested_reject() -> None:
    """Its own limit counts silent connections (so the node lifts it and counts
    negotiated associations itself), and a request rejected by an EVT_REQUESTED
    handler skips its negotiation."""
    negotiate = inspect.getsource(ACSE._negotiate_as_acceptor)
    assert "self.assoc.ae.active_associations" in negotiate
    assert "self.assoc.ae.maximum_associations" in negotiate
    reactor = inspect.getsource(Association.run_reactor)
    assert reactor.index("evt.EVT_REQUESTED") < reactor.index(
        "if not self.is_aborted and not self.is_rejected:"
    )
    reject = inspect.getsource(ACSE.send_reject)
    assert "self.assoc.is_rejected = True" in reject


def test_the_node_lifts_pynetdicoms_association_limit() -> None:
    ae = build_ae(Settings(database_url="sqlite:////tmp/unused.sqlite3", max_associations=3))
    assert ae.maximum_associations > 10_000
