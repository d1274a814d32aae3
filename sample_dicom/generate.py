"""Generate the sample studies in sample_dicom/ from dicom_node.domain.demo.

Deterministic: the same bytes on every run and machine (fixed UIDs, dates and
pixel patterns), so the committed files can be checked against this script:

    python sample_dicom/generate.py            # (re)write sample_dicom/
    python sample_dicom/generate.py --out DIR  # write elsewhere
"""

from __future__ import annotations

import argparse
import struct
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from dicom_node.domain.demo import DEMO_STUDIES, DemoSeries, DemoStudy, demo_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SOP_CLASS = {"CT": CT_IMAGE_STORAGE, "MR": MR_IMAGE_STORAGE}
ROWS = COLUMNS = 32
STUDY_DATE = "20260105"
HERE = Path(__file__).resolve().parent


def pixel_data(seed: int) -> bytes:
    # A gradient plus a per-image offset: small, deterministic, visibly distinct.
    values = [
        ((row * COLUMNS + column) * 7 + seed * 131) % 4096
        for row in range(ROWS)
        for column in range(COLUMNS)
    ]
    return struct.pack(f"<{len(values)}H", *values)


def build_instance(
    study: DemoStudy, series: DemoSeries, number: int, index: int, procedure: int
) -> Dataset:
    sop_class = SOP_CLASS[study.modality]
    sop_instance = study.sop_instance_uid(series, number)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "DICOM_NODE_DEMO"

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = study.specific_character_set
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = STUDY_DATE
    ds.StudyTime = f"{9 + index:02d}0000"
    ds.SeriesTime = f"{9 + index:02d}{series.number:02d}00"
    ds.ContentTime = f"{9 + index:02d}{series.number:02d}{number:02d}"
    ds.AccessionNumber = study.accession_number
    ds.Modality = study.modality
    ds.Manufacturer = "dicom-node demo"
    ds.StationName = study.modality_ae_title.replace("_", "")[:16]
    ds.StudyDescription = study.description
    ds.SeriesDescription = series.description
    ds.ReferringPhysicianName = "FERRER^RAY"
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.IssuerOfPatientID = "DEMO"
    ds.PatientBirthDate = study.birth_date
    ds.PatientSex = study.sex
    ds.BodyPartExamined = study.body_part
    ds.StudyInstanceUID = study.study_instance_uid
    ds.SeriesInstanceUID = study.series_instance_uid(series)
    ds.StudyID = f"{index + 1}"
    ds.SeriesNumber = series.number
    ds.InstanceNumber = number
    ds.FrameOfReferenceUID = demo_uid("frame", study.accession_number, str(series.number))
    ds.ImagePositionPatient = [0, 0, number * 5]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.5, 0.5]
    ds.SliceThickness = 5
    if study.ordered:
        request = Dataset()
        request.AccessionNumber = study.accession_number
        request.RequestedProcedureID = f"RP{procedure:04d}"
        request.ScheduledProcedureStepID = f"SPS{procedure:04d}"
        ds.RequestAttributesSequence = Sequence([request])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ROWS
    ds.Columns = COLUMNS
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if study.modality == "CT":
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
    ds.PixelData = pixel_data(index * 100 + series.number * 10 + number)
    return ds


def generate(out: Path) -> list[Path]:
    written = []
    procedure = 0
    for index, study in enumerate(DEMO_STUDIES):
        # the demo orders number their procedure IDs over ordered studies only
        procedure += study.ordered
        for series in study.series:
            for number in range(1, series.instances + 1):
                ds = build_instance(study, series, number, index, procedure)
                path = out / study.accession_number / f"S{series.number}" / f"I{number}.dcm"
                path.parent.mkdir(parents=True, exist_ok=True)
                ds.save_as(path, enforce_file_format=True)
                written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    files = generate(args.out)
    size = sum(path.stat().st_size for path in files)
    print(f"wrote {len(files)} files, {size / 1024:.0f} KiB, under {args.out}")


if __name__ == "__main__":
    main()
