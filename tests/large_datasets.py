"""Oversized and deflate-bomb instances for the data set limit tests, built a MiB
at a time (the test process is often the node's too: it must not hold them)."""

from __future__ import annotations

import zlib
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config

from dicom_node.domain.part10 import dataset_offset
from tests.dicomfiles import CT_IMAGE_STORAGE, ct_dataset, to_bytes

MIB = 1 << 20
# a private block after the pixel data, in tag order: (7FE1,0010) creator, (7FE1,1010) OB
_CREATOR = b"\xe1\x7f\x10\x00LO\x04\x00NODE"


def deflate(*parts: bytes, zeros: int = 0) -> bytes:
    """Raw deflate (PS3.5 A.5: no zlib header) of ``parts`` then ``zeros`` zero bytes."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [compressor.compress(part) for part in parts]
    block = bytes(MIB)
    for _ in range(zeros // MIB):
        out.append(compressor.compress(block))
    out.append(compressor.compress(bytes(zeros % MIB)))
    out.append(compressor.flush())
    return b"".join(out)


def deflated_part10(zeros: int, *, sop_uid: str | None = None) -> bytes:
    """A CT instance in Deflated Explicit VR Little Endian whose data set ends with
    a private OB element of ``zeros`` zero bytes: ~1000:1, a bomb when large."""
    ds = ct_dataset(study_uid=generate_uid(), sop_uid=sop_uid)
    plain = to_bytes(ds)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    deflated = to_bytes(ds)
    meta = deflated[: dataset_offset(deflated)]
    element = b"\xe1\x7f\x10\x10OB\x00\x00" + zeros.to_bytes(4, "little")
    return meta + deflate(plain[dataset_offset(plain) :], _CREATOR, element, zeros=zeros)


def sized_instance(dataset_bytes: int) -> Dataset:
    """A CT instance whose encoded data set (Explicit VR Little Endian) is exactly
    ``dataset_bytes`` long (even), padded with a private OB element."""
    ds = ct_dataset(study_uid=generate_uid())
    plain = to_bytes(ds)
    padding = dataset_bytes - (len(plain) - dataset_offset(plain)) - len(_CREATOR) - 12
    assert padding >= 0 and padding % 2 == 0
    ds.add_new(0x7FE10010, "LO", "NODE")
    ds.add_new(0x7FE11010, "OB", bytes(padding))
    return ds


def send_files(port: int, files: list[Path], *, calling: str = "RAWSCU") -> list[Dataset]:
    """One association, pynetdicom's chunked mode: each file's bytes after its
    file meta go on the wire as they are (a bomb stays a bomb), read piece by piece."""
    ae = AE(ae_title=calling)
    # one context per syntax: the node picks the first syntax of a mixed context
    for syntax in (ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian):
        ae.add_requested_context(CT_IMAGE_STORAGE, syntax)
    previous = pynetdicom_config.STORE_SEND_CHUNKED_DATASET
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title="DICOM_NODE")
        assert assoc.is_established
        try:
            return [assoc.send_c_store(path) for path in files]
        finally:
            assoc.release()
    finally:
        pynetdicom_config.STORE_SEND_CHUNKED_DATASET = previous
