"""The SCP's contexts are copied per association without rebuilding every UID."""

from __future__ import annotations

import copy

from dicom_node.scp.server import SharedUidContexts, build_ae
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
