"""dicom-node: a DICOM network node and radiology workflow backend."""

__version__ = "0.1.0"
