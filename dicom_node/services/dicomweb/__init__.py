"""DICOMweb (PS3.18) over the node's index and store: QIDO-RS, WADO-RS, STOW-RS.

The HTTP side lives in ``api/routes/dicomweb/``; this package holds what those
routes share with nothing HTTP-specific in it: which stored instances a user
may read (``instances.py``, the one visibility rule applied), the DICOM JSON
model, rendering and the multipart formats.
"""
