"""Building small DICOM Part 10 files in code, for tests."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def ct_dataset(
    *,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    patient_id: str = "PAT1",
    patient_name: str = "DOE^JANE",
    birth_date: str = "19700101",
    sex: str = "F",
    accession: str = "",
    modality: str = "CT",
    instance_number: int = 1,
    pixel_seed: int = 0,
    request_accessions: tuple[str, ...] = (),
    request_study_uids: tuple[str, ...] = (),
) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientBirthDate = birth_date
    ds.PatientSex = sex
    ds.AccessionNumber = accession
    ds.Modality = modality
    ds.StudyDate = "20260105"
    ds.StudyTime = "101500"
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    if request_accessions or request_study_uids:
        items = []
        for number in request_accessions:
            item = Dataset()
            item.AccessionNumber = number
            items.append(item)
        for uid in request_study_uids:
            item = Dataset()
            item.StudyInstanceUID = uid
            items.append(item)
        ds.RequestAttributesSequence = items
    ds.Rows = ds.Columns = 4
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = bytes((pixel_seed + i) % 256 for i in range(32))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def to_bytes(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_bytes(ds))
    return path
