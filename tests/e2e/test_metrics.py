"""GET /metrics over real associations and a real HTTP server.

Counters are process-global and the suite runs many nodes in one process, so
every assertion on a counter is on its change across the test's own traffic.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, StoragePresentationContexts
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityWorklistInformationFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from dicom_node.db.engine import Database
from dicom_node.db.models import WorklistItem
from dicom_node.metrics import STORE_RECEIVED, STORE_REFUSED, QueueCollector
from dicom_node.node import Node
from dicom_node.services.ingest.instances import StoreOutcome
from dicom_node.settings import Settings
from tests.api import conftest as api_conftest
from tests.api.conftest import ApiServer, serve
from tests.conftest import node_settings
from tests.dicomfiles import ct_dataset
from tests.support import wait_for

# the HTTP API fixture of tests/api, for the access tests at the end
api = api_conftest.api

SCRAPE_TOKEN = "scrape-secret-0123456789"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(base_url: str, token: str = SCRAPE_TOKEN) -> Samples:
    response = httpx.get(
        f"{base_url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def url(node: Node) -> str:
    return f"http://127.0.0.1:{node.http_port}"


def associate(node: Node, calling: str = "METRICS") -> Association:
    ae = AE(ae_title=calling)
    ae.requested_contexts = StoragePresentationContexts[:100]
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(ModalityWorklistInformationFind)
    return ae.associate("127.0.0.1", node.dicom_port, ae_title="DICOM_NODE")


@pytest.fixture
def metered(make_node) -> Node:  # type: ignore[no-untyped-def]
    node: Node = make_node(metrics_token=SCRAPE_TOKEN)
    return node


def test_every_store_outcome_has_a_fixed_label_value() -> None:
    assert {o.value for o in StoreOutcome} <= set(STORE_RECEIVED) | set(STORE_REFUSED)


def test_stored_duplicate_and_refused_instances_are_counted_exactly(metered: Node) -> None:
    study = generate_uid()
    good = [ct_dataset(study_uid=study, instance_number=n) for n in range(1, 4)]
    no_study_uid = ct_dataset(study_uid=study)
    del no_study_uid.StudyInstanceUID
    before = scrape(url(metered))

    assoc = associate(metered)
    assert assoc.is_established
    statuses = [int(assoc.send_c_store(ds).Status) for ds in good]
    statuses.append(int(assoc.send_c_store(good[0]).Status))  # the same again
    statuses.append(int(assoc.send_c_store(no_study_uid).Status))
    during = scrape(url(metered))
    assoc.release()

    assert statuses == [0, 0, 0, 0, 0xA900]
    assert delta(before, during, "dicom_node_associations_active") == 1
    assert wait_for(
        lambda: delta(before, scrape(url(metered)), "dicom_node_associations_active") == 0
    )
    after = scrape(url(metered))
    name = "dicom_node_instances_received_total"
    assert delta(before, after, name, outcome="stored") == 3
    assert delta(before, after, name, outcome="duplicate") == 1
    refused = "dicom_node_instances_refused_total"
    assert delta(before, after, refused, reason="mismatch") == 1
    assert sum(delta(before, after, refused, reason=r) for r in STORE_REFUSED) == 1
    assert delta(before, after, "dicom_node_associations_total", result="accepted") == 1
    assert delta(before, after, "dicom_node_associations_total", result="rejected") == 0
    assert delta(before, after, "dicom_node_associations_aborted_total") == 0


def test_c_find_durations_are_observed_by_query_level(metered: Node) -> None:
    before = scrape(url(metered))
    assoc = associate(metered)
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    for _ in range(2):
        statuses = [
            int(s.Status)
            for s, _ in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
        ]
        assert statuses[-1] == 0
    worklist = Dataset()
    worklist.PatientName = ""
    statuses = [
        int(s.Status) for s, _ in assoc.send_c_find(worklist, ModalityWorklistInformationFind)
    ]
    assert statuses[-1] == 0
    no_level = Dataset()
    no_level.PatientID = ""
    statuses = [
        int(s.Status)
        for s, _ in assoc.send_c_find(no_level, StudyRootQueryRetrieveInformationModelFind)
    ]
    assert statuses[-1] != 0  # refused: no QueryRetrieveLevel
    assoc.release()
    after = scrape(url(metered))

    count = "dicom_node_cfind_seconds_count"
    assert delta(before, after, count, level="study") == 2
    assert delta(before, after, count, level="worklist") == 1
    assert delta(before, after, count, level="unknown") == 1
    assert delta(before, after, count, level="series") == 0
    inf = "dicom_node_cfind_seconds_bucket"
    assert delta(before, after, inf, level="study", le="+Inf") == 2
    assert delta(before, after, "dicom_node_cfind_seconds_sum", level="study") > 0


def test_rejected_and_aborted_associations_are_counted(make_node) -> None:  # type: ignore[no-untyped-def]
    node: Node = make_node(metrics_token=SCRAPE_TOKEN, allowed_calling_aets=["KNOWN"])
    before = scrape(url(node))
    refused = associate(node, calling="STRANGER")
    assert refused.is_rejected
    aborted = associate(node, calling="KNOWN")
    assert aborted.is_established
    aborted.abort()
    assert wait_for(
        lambda: delta(before, scrape(url(node)), "dicom_node_associations_aborted_total") == 1
    )
    assert wait_for(lambda: delta(before, scrape(url(node)), "dicom_node_associations_active") == 0)
    name = "dicom_node_associations_total"
    # counted by EVT_REJECTED, which fires after the A-ASSOCIATE-RJ is queued for
    # sending: the client may hold the rejection before the node has counted it
    assert wait_for(lambda: delta(before, scrape(url(node)), name, result="rejected") == 1)
    after = scrape(url(node))
    assert delta(before, after, name, result="rejected") == 1
    assert delta(before, after, name, result="accepted") == 1
    # the peer's AE title is never a label value
    assert not any("STRANGER" in str(labels) for _, labels in after)


def test_queue_sizes_are_read_from_the_database_at_scrape_time(metered: Node) -> None:
    assert metered.db is not None and metered.store is not None
    with metered.db.unit_of_work() as session:
        for status, priority in [("pending", "stat"), ("pending", "stat"), ("claimed", "routine")]:
            session.add(WorklistItem(queue_type="reading", status=status, priority=priority))
        session.add(WorklistItem(queue_type="reading", status="completed", priority="stat"))
        session.add(
            WorklistItem(
                queue_type="acquisition", status="pending", priority="urgent", overdue=True
            )
        )
    (metered.store.tmp / "leftover.part").write_bytes(b"x")
    # a study with no order behind it waits for reconciliation
    assoc = associate(metered)
    assert int(assoc.send_c_store(ct_dataset(study_uid=generate_uid())).Status) == 0
    assoc.release()

    samples = scrape(url(metered))
    assert value(samples, "dicom_node_database_up") == 1
    items = "dicom_node_worklist_open_items"
    assert value(samples, items, queue="reading", status="pending", priority="stat") == 2
    assert value(samples, items, queue="reading", status="claimed", priority="routine") == 1
    assert value(samples, items, queue="acquisition", status="pending", priority="urgent") == 1
    assert value(samples, items, queue="reading", status="completed", priority="stat") == 0
    overdue = "dicom_node_worklist_overdue_items"
    assert value(samples, overdue, queue="acquisition", priority="urgent") == 1
    assert value(samples, overdue, queue="reading", priority="stat") == 0
    assert value(samples, "dicom_node_store_temp_files") == 1
    reconciliation = "dicom_node_reconciliation_open_studies"
    waiting = sum(
        value(samples, reconciliation, metadata_status=s)
        for s in ("pending", "unmatched", "conflict")
    )
    assert waiting == 1


UNREACHABLE = "postgresql+psycopg://nobody@127.0.0.1:1/nothing"


@pytest.fixture
def api_without_database(tmp_path: Path) -> Iterator[str]:
    db = Database(UNREACHABLE)
    settings = node_settings(UNREACHABLE, tmp_path / "data", metrics_token=SCRAPE_TOKEN)
    server, thread, port = serve(db, settings)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    db.dispose()


def test_a_scrape_with_the_database_down_reports_it_instead_of_failing(
    api_without_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    first = scrape(api_without_database)
    second = scrape(api_without_database)
    for samples in (first, second):
        assert value(samples, "dicom_node_database_up") == 0
        assert ("dicom_node_instances_received_total", frozenset({("outcome", "stored")})) in (
            samples
        )
        assert not any(name == "dicom_node_worklist_open_items" for name, _ in samples)
    warnings = [r for r in caplog.records if "queue sizes unavailable" in r.getMessage()]
    assert len(warnings) == 1  # logged once, not at every scrape


def test_the_queue_collector_itself_survives_an_unreachable_database(tmp_path: Path) -> None:
    db = Database(UNREACHABLE)
    try:
        families = {f.name: f for f in QueueCollector(db, tmp_path / "no-tmp").collect()}
    finally:
        db.dispose()
    assert families["dicom_node_database_up"].samples[0].value == 0
    assert families["dicom_node_store_temp_files"].samples[0].value == 0


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_worker_processes_counts_reach_the_main_process_metrics(make_node) -> None:  # type: ignore[no-untyped-def]
    node: Node = make_node(metrics_token=SCRAPE_TOKEN, dicom_workers=2)
    before = scrape(url(node))
    study = generate_uid()
    for n in range(1, 4):  # one association each: the kernel spreads them over the workers
        assoc = associate(node)
        assert assoc.is_established
        assert int(assoc.send_c_store(ct_dataset(study_uid=study, instance_number=n)).Status) == 0
        assoc.release()
    mismatch = ct_dataset(study_uid=study)
    del mismatch.StudyInstanceUID
    assoc = associate(node)
    assert int(assoc.send_c_store(mismatch).Status) == 0xA900
    assoc.release()

    def settled() -> bool:
        after = scrape(url(node))
        return (
            delta(before, after, "dicom_node_associations_active") == 0
            and delta(before, after, "dicom_node_associations_total", result="accepted") == 4
        )

    assert wait_for(settled)
    after = scrape(url(node))
    assert delta(before, after, "dicom_node_instances_received_total", outcome="stored") == 3
    assert delta(before, after, "dicom_node_instances_refused_total", reason="mismatch") == 1
    assert value(after, "dicom_node_database_up") == 1


# --- who may scrape -----------------------------------------------------------------


@pytest.fixture
def api_settings(db_url: str, tmp_path: Path) -> Settings:
    return node_settings(db_url, tmp_path / "data", metrics_token=SCRAPE_TOKEN)


def test_metrics_need_the_scrape_token_or_an_admin(api: ApiServer) -> None:
    anonymous = api.anonymous()
    assert anonymous.get("/metrics").status_code == 401
    wrong = anonymous.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["status"] == 401
    radiologist = api.client("radiologist").get("/metrics")
    assert radiologist.status_code == 403
    assert radiologist.json()["error"]["status"] == 403
    admin = api.client("admin").get("/metrics")
    assert admin.status_code == 200
    assert "dicom_node_instances_received_total" in admin.text
    assert scrape(api.base_url)  # the static token


def test_without_a_configured_scrape_token_only_admins_get_metrics(
    db: Database, tmp_path: Path
) -> None:
    settings = node_settings(str(db.url), tmp_path / "data")
    assert settings.metrics_token is None
    server, thread, port = serve(db, settings)
    served = ApiServer(base_url=f"http://127.0.0.1:{port}", db=db, settings=settings)
    try:
        for token in (SCRAPE_TOKEN, "**********"):
            response = served.anonymous().get(
                "/metrics", headers={"Authorization": f"Bearer {token}"}
            )
            assert response.status_code == 401, token
        assert served.client("admin").get("/metrics").status_code == 200
    finally:
        for client in served.clients:
            client.close()
        server.should_exit = True
        thread.join(timeout=10)
