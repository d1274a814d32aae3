"""The DICOM front-end: a pynetdicom AE whose handlers call the services."""
