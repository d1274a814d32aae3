"""sample_dicom/ is generated, small, deterministic and matches the demo orders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pydicom

from dicom_node.domain.demo import DEMO_STUDIES
from tests.support import SAMPLE_DIR, dcmtk_tool

MAX_SAMPLE_BYTES = 2 * 1024 * 1024


def committed_files() -> dict[str, bytes]:
    return {
        str(path.relative_to(SAMPLE_DIR)): path.read_bytes()
        for path in sorted(SAMPLE_DIR.rglob("*.dcm"))
    }


def test_generator_reproduces_the_committed_files_byte_for_byte(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(SAMPLE_DIR / "generate.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    generated = {
        str(path.relative_to(tmp_path)): path.read_bytes()
        for path in sorted(tmp_path.rglob("*.dcm"))
    }
    assert generated == committed_files()


def test_samples_are_small_and_cover_every_demo_series() -> None:
    files = committed_files()
    assert 0 < sum(len(data) for data in files.values()) < MAX_SAMPLE_BYTES
    expected = sum(series.instances for study in DEMO_STUDIES for series in study.series)
    assert len(files) == expected
    modalities = {study.modality for study in DEMO_STUDIES}
    assert {"CT", "MR"} <= modalities
    assert all(len(study.series) >= 1 for study in DEMO_STUDIES)
    assert any(len(study.series) >= 3 for study in DEMO_STUDIES)


def test_sample_headers_carry_the_demo_order_identifiers() -> None:
    for study in DEMO_STUDIES:
        first = SAMPLE_DIR / study.accession_number / "S1" / "I1.dcm"
        ds = pydicom.dcmread(first)
        assert ds.AccessionNumber == study.accession_number
        assert ds.StudyInstanceUID == study.study_instance_uid
        assert ds.PatientID == study.patient_id
        assert str(ds.PatientName) == study.patient_name
        assert ("RequestAttributesSequence" in ds) is study.ordered


def test_dcmtk_reads_every_sample_file() -> None:
    dcmdump = dcmtk_tool("dcmdump")
    paths = [str(p) for p in sorted(SAMPLE_DIR.rglob("*.dcm"))]
    result = subprocess.run([dcmdump, "-q", "+L", "+U8", *paths], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Yamada^Tarou=山田^太郎=やまだ^たろう" in result.stdout
    assert "MÜLLER^HANS" in result.stdout  # ISO_IR 100 converted by DCMTK itself
