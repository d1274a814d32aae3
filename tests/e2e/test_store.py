"""C-STORE over real associations: DCMTK storescu as the outside reference."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from pynetdicom import AE, StoragePresentationContexts
from pynetdicom import _config as pynetdicom_config
from sqlalchemy import func, select

from dicom_node.db.models import AuditEvent, DicomInstance, DicomSeries, DicomStudy, Patient
from dicom_node.domain.part10 import dataset_offset
from dicom_node.node import Node
from tests.dicomfiles import ct_dataset, to_bytes, write
from tests.support import SAMPLE_DIR, dcmtk_env, dcmtk_tool, wait_for

CHARSET_DIR = Path(pydicom.data.__file__).parent / "charset_files"

# One or more files per transfer syntax among pydicom's bundled real files,
# plus SR/RT/waveform objects: all must arrive exactly as sent.
TRANSFER_SYNTAX_FILES = [
    "CT_small.dcm",  # explicit VR little endian
    "MR_small_implicit.dcm",  # implicit VR little endian
    "MR_small_bigendian.dcm",  # explicit VR big endian (retired)
    "image_dfl.dcm",  # deflated explicit VR little endian
    "SC_rgb_dcmtk_+eb+cr.dcm",  # JPEG baseline
    "JPEG-lossy.dcm",  # JPEG extended
    "SC_rgb_jpeg_gdcm.dcm",  # JPEG lossless SV1
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
    "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
    "JPEG2000.dcm",  # JPEG 2000
    "MR_small_RLE.dcm",  # RLE lossless
    "rtplan.dcm",
    "rtdose.dcm",
    "waveform_ecg.dcm",
    "test-SR.dcm",
]


def storescu(
    port: int, *paths: Path | str, calling: str = "STORESCU", extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """storescu proposing each file's own transfer syntax (-R), on one association."""
    return subprocess.run(
        [
            dcmtk_tool("storescu"),
            "-aec",
            "DICOM_NODE",
            "-aet",
            calling,
            "-R",
            "-nh",
            *extra,
            "127.0.0.1",
            str(port),
            *map(str, paths),
        ],
        capture_output=True,
        text=True,
        env=dcmtk_env(),
        timeout=300,
    )


def dataset_bytes(data: bytes) -> bytes:
    return data[dataset_offset(data) :]


def stored(node: Node) -> dict[str, DicomInstance]:
    assert node.db is not None
    with node.db.read() as session:
        return {i.sop_instance_uid: i for i in session.scalars(select(DicomInstance))}


def test_storescu_sends_the_samples_and_every_instance_is_indexed(node: Node) -> None:
    files = sorted(SAMPLE_DIR.rglob("*.dcm"))
    result = storescu(node.dicom_port, "+sd", "+r", SAMPLE_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    instances = stored(node)
    assert len(instances) == len(files)
    assert node.db is not None and node.store is not None
    for path in files:
        sent = path.read_bytes()
        uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        on_disk = node.store.absolute(instances[uid].file_path).read_bytes()
        assert dataset_bytes(on_disk) == dataset_bytes(sent)
    with node.db.read() as session:
        assert session.scalar(select(func.count(DicomStudy.id))) == 4
        assert session.scalar(select(func.sum(DicomStudy.instance_count))) == len(files)
    assert wait_for(lambda: len(_transfer_audits(node)) == 1)
    event = _transfer_audits(node)[0]
    assert event.details["counts"] == {"stored": len(files)}
    assert event.actor == "STORESCU"
    assert event.details["study_count"] == 4


def _transfer_audits(node: Node) -> list[AuditEvent]:
    assert node.db is not None
    with node.db.read() as session:
        return list(
            session.scalars(select(AuditEvent).where(AuditEvent.action == "instances_received"))
        )


# storescu proposes only uncompressed syntaxes unless told which others to offer
STORESCU_PROPOSE = {
    "1.2.840.10008.1.2": "-xi",
    "1.2.840.10008.1.2.1": "-xe",
    "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.57": "-xs",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
}


@pytest.mark.parametrize("name", TRANSFER_SYNTAX_FILES)
def test_pydicom_file_is_stored_in_its_own_transfer_syntax_unchanged(node: Node, name: str) -> None:
    """storescu re-encodes some files as it sends them (lengths, padding), so the
    file's bytes are not always what went on the wire; what must hold is that
    nothing was decompressed, converted or altered: same syntax, same elements,
    same pixel data bytes."""
    path = Path(get_testdata_file(name))  # type: ignore[arg-type]
    original = pydicom.dcmread(path)
    syntax = str(original.file_meta.TransferSyntaxUID)
    result = storescu(node.dicom_port, path, extra=(STORESCU_PROPOSE[syntax],))
    assert result.returncode == 0, result.stdout + result.stderr
    instance = stored(node)[original.SOPInstanceUID]
    assert instance.transfer_syntax_uid == syntax
    assert node.store is not None
    kept = pydicom.dcmread(node.store.absolute(instance.file_path))
    assert kept.file_meta.TransferSyntaxUID == syntax
    assert elements(kept) == elements(original)
    if "PixelData" in original:
        assert kept.PixelData == original.PixelData


def elements(ds: pydicom.Dataset) -> dict[int, object]:
    """The dataset's values, without what DCMTK normalises on sending (group
    lengths, trailing padding); the file meta is ours and not compared."""
    return {
        int(element.tag): element.value
        for element in ds
        if element.tag.element != 0x0000 and element.tag != 0xFFFCFFFC
    }


# PatientID -> PatientName as the DICOM standard's character set examples give them
# (PS3.5 annexes H, I, J and K, the source of pydicom's charset files); written out
# here so the test does not merely agree with the decoder under test.
CHARSET_NAMES = {
    "SCSARAB": "قباني^لنزار",  # ISO_IR 127 Arabic
    "SCSFREN": "Buc^Jérôme",  # ISO_IR 100
    "SCSGERM": "Äneas^Rüdiger",  # ISO_IR 100
    "SCSGREEK": "Διονυσιος",  # ISO_IR 126 Greek
    "SCSHBRW": "שרון^דבורה",  # ISO_IR 138 Hebrew
    # the standard's example itself mixes Cyrillic and Latin letters (c, e, y, p)
    "SCSRUSS": "Люкceмбypг",  # noqa: RUF001  ISO_IR 144 Cyrillic
    "H31EXAMPLE": "Yamada^Tarou=山田^太郎=やまだ^たろう",  # ISO 2022 IR 87 Japanese
    "H32EXAMPLE": "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう",  # IR 13 katakana + IR 87
    "I2EXAMPLE": "Hong^Gildong=洪^吉洞=홍^길동",  # ISO 2022 IR 149 Korean
    "2008-3": "김희중",  # Korean
    "2008-4": "やまだ^たろう",  # Japanese, with and without explicit IR 6
    "X1EXAMPLE": "Wang^XiaoDong=王^小東",  # ISO_IR 192 UTF-8
    "X2EXAMPLE": "Wang^XiaoDong=王^小东",  # GB18030
}


def test_charset_files_are_indexed_as_the_right_unicode_names(node: Node) -> None:
    files = sorted(CHARSET_DIR.glob("chr*.dcm"))
    result = storescu(node.dicom_port, *files)
    # chrSQEncoding*.dcm are fragments without SOP Class/Instance UIDs: refused
    assert result.returncode == 0, result.stdout + result.stderr
    assert node.db is not None
    with node.db.read() as session:
        names = {p.patient_id: p.patient_name for p in session.scalars(select(Patient))}
        folded = {p.patient_id: p.patient_name_folded for p in session.scalars(select(Patient))}
    assert names == CHARSET_NAMES
    # the case-folded copy C-FIND matches on is Unicode-aware, not ASCII-only
    # (Unicode case folding maps the final sigma to the medial one: either spelling matches)
    assert folded["SCSGREEK"] == "διονυσιοσ"
    assert folded["SCSRUSS"] == "люкceмбypг"  # noqa: RUF001


def test_dcmtk_sent_files_missing_required_uids_are_refused_with_a900(node: Node) -> None:
    # Real files from pydicom's set that lack StudyInstanceUID: JPEG-LS near-lossless.
    files = [
        get_testdata_file(n) for n in ("JPEGLSNearLossless_08.dcm", "SC_rgb_jls_lossy_line.dcm")
    ]
    result = storescu(node.dicom_port, *files, extra=("-xu", "-v"))  # type: ignore[arg-type]
    output = result.stdout + result.stderr
    assert output.count("Received Store Response (Error: DataSetDoesNotMatchSOPClass)") == 2, output
    assert stored(node) == {}


def _raw_send(port: int, files: list[Path]) -> list[int]:
    """Send files with pynetdicom's chunked mode: the bytes after the file meta go
    on the wire undecoded, so a broken dataset reaches the node as it is."""
    ae = AE(ae_title="RAWSCU")
    ae.requested_contexts = StoragePresentationContexts[:120]
    previous = pynetdicom_config.STORE_SEND_CHUNKED_DATASET
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title="DICOM_NODE")
        assert assoc.is_established
        statuses = [int(assoc.send_c_store(path).Status) for path in files]
        assoc.release()
    finally:
        pynetdicom_config.STORE_SEND_CHUNKED_DATASET = previous
    return statuses


def _with_body(tmp_path: Path, name: str, body: bytes, **meta_uids: str) -> Path:
    """A file with a valid explicit-LE CT file meta followed by ``body``."""
    template = ct_dataset(study_uid=generate_uid())
    for key, value in meta_uids.items():
        setattr(template.file_meta, key, value)
    data = to_bytes(template)
    path = tmp_path / name
    path.write_bytes(data[: dataset_offset(data)] + body)
    return path


def test_broken_datasets_get_failure_statuses_and_the_association_goes_on(
    node: Node, tmp_path: Path
) -> None:
    good = write(ct_dataset(study_uid=generate_uid()), tmp_path / "good.dcm")
    whole = to_bytes(ct_dataset(study_uid=generate_uid()))
    truncated = _with_body(tmp_path, "truncated.dcm", dataset_bytes(whole)[:40])
    garbage = _with_body(tmp_path, "garbage.dcm", os.urandom(64) + b"\xff" * 64)
    other = ct_dataset(study_uid=generate_uid())
    mismatch = _with_body(tmp_path, "mismatch.dcm", dataset_bytes(to_bytes(other)))
    no_uid = ct_dataset(study_uid=generate_uid())
    del no_uid.StudyInstanceUID
    missing = write(no_uid, tmp_path / "missing.dcm")
    statuses = _raw_send(node.dicom_port, [truncated, garbage, mismatch, missing, good])
    assert statuses[0] == 0xC000
    assert statuses[1] == 0xC000
    assert statuses[2] == 0xA900  # dataset's SOPInstanceUID is not the command's
    assert statuses[3] == 0xA900  # a required attribute of the SOP class is missing
    assert statuses[4] == 0x0000
    assert list(stored(node)) == [pydicom.dcmread(good).SOPInstanceUID]
    assert node.store is not None
    assert list(node.store.tmp.iterdir()) == []
    assert wait_for(lambda: len(_transfer_audits(node)) == 1)
    counts = _transfer_audits(node)[0].details["counts"]
    assert counts["stored"] == 1
    assert _transfer_audits(node)[0].outcome == "minor_failure"


@pytest.mark.parametrize("workers", [1, 2], ids=["in-process", "2-workers"])
def test_four_clients_two_sending_the_same_study_give_one_study_with_exact_counts(
    make_node, tmp_path: Path, workers: int
) -> None:
    node = make_node(dicom_workers=workers)
    shared_study = generate_uid()
    series = [generate_uid(), generate_uid()]
    shared = [
        write(
            ct_dataset(study_uid=shared_study, series_uid=series[n % 2], instance_number=n),
            tmp_path / "shared" / f"{n}.dcm",
        )
        for n in range(40)
    ]
    others = [
        [
            write(
                ct_dataset(study_uid=study, patient_id=f"P{k}", instance_number=n),
                tmp_path / f"other{k}" / f"{n}.dcm",
            )
            for n in range(20)
        ]
        for k, study in enumerate([generate_uid(), generate_uid()])
    ]
    commands = [shared, list(reversed(shared)), *others]
    processes = [
        subprocess.Popen(
            [
                dcmtk_tool("storescu"),
                "-aec",
                "DICOM_NODE",
                "-aet",
                f"SCU{k}",
                "-R",
                "127.0.0.1",
                str(node.dicom_port),
                *map(str, files),
            ],
            env=dcmtk_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for k, files in enumerate(commands)
    ]
    for process in processes:
        out, _ = process.communicate(timeout=300)
        assert process.returncode == 0, out
    assert node.db is not None
    with node.db.read() as session:
        study = session.scalars(
            select(DicomStudy).where(DicomStudy.study_instance_uid == shared_study)
        ).one()
        assert (study.series_count, study.instance_count) == (2, 40)
        rows = session.scalar(
            select(func.count(DicomInstance.id))
            .join(DicomSeries)
            .where(DicomSeries.study_pk == study.id)
        )
        assert rows == 40
        assert session.scalar(select(func.count(DicomStudy.id))) == 3
        assert session.scalar(select(func.count(DicomInstance.id))) == 80
