"""The one OIP datatype table agrees with the generated InferTensorContents message."""

from __future__ import annotations

import numpy as np
import pytest

from headwater.shared.oip_datatypes import DATATYPES, pack_raw, typed_contents, unpack_raw_bytes
from headwater.shared.pb import oip_pb2


def test_every_contents_field_is_named_by_a_datatype() -> None:
    fields = {f.name for f in oip_pb2.InferTensorContents.DESCRIPTOR.fields}
    assert {d.field for d in DATATYPES.values()} == fields


@pytest.mark.parametrize("name", [n for n, d in DATATYPES.items() if d.kind != "bytes"])
def test_raw_dtype_fits_in_its_field(name: str) -> None:
    datatype = DATATYPES[name]
    assert datatype.dtype == datatype.dtype.newbyteorder("<")  # little-endian on any host
    assert np.can_cast(datatype.dtype, datatype.field_dtype, casting="safe")


@pytest.mark.parametrize("name", [n for n, d in DATATYPES.items() if d.kind != "bytes"])
def test_pack_raw_is_what_frombuffer_reads(name: str) -> None:
    datatype = DATATYPES[name]
    values = [1, 0, 1]
    raw = pack_raw(name, values)
    assert len(raw) == len(values) * datatype.dtype.itemsize
    assert np.frombuffer(raw, dtype=datatype.dtype).tolist() == np.asarray(
        values, dtype=datatype.dtype
    ).tolist()


def test_bytes_round_trip_and_typed_contents() -> None:
    items = ["Zürich".encode(), b"", b"Bern"]
    assert unpack_raw_bytes(pack_raw("BYTES", items)) == items
    contents = oip_pb2.InferTensorContents()
    typed_contents(contents, "BYTES").extend(items)
    assert list(contents.bytes_contents) == items
