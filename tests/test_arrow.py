"""The numpy-to-Arrow helpers give what ``pa.array`` gives, without importing pandas."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from _fresh import fresh_python
from _pcapbuild import eth, handshake_session, write_pcap

from forensics import _arrow as A

RNG = np.random.default_rng(7)


@pytest.mark.parametrize("typ", [pa.int8(), pa.uint8(), pa.int16(), pa.uint16(), pa.int32(),
                                 pa.uint32(), pa.int64(), pa.float64(), pa.bool_(),
                                 pa.timestamp("us", "UTC")])
def test_column_equals_pa_array(typ):
    values = RNG.integers(0, 120, 1000)
    null = RNG.random(1000) < 0.2
    got = A.column(values, typ, null=null)
    if pa.types.is_timestamp(typ):
        want = pa.array(values, pa.int64(), mask=null).cast(typ)
    else:
        want = pa.array(values.astype(typ.to_pandas_dtype()), typ, mask=null)
    assert got.equals(want)
    assert got.null_count == int(null.sum())
    assert A.column(values, typ).null_count == 0


def test_column_shares_the_numpy_buffer_when_the_dtype_fits():
    values = np.arange(10, dtype=np.int64)
    arr = A.column(values)
    values[3] = 99
    assert arr[3].as_py() == 99 and arr.type == pa.int64()


def test_column_rejects_bad_shapes():
    with pytest.raises(ValueError):
        A.column(np.zeros((2, 2)))
    with pytest.raises(ValueError):
        A.column(np.zeros(3), null=np.zeros(4, bool))


def test_strings_from_objects_and_fixed_width_bytes():
    words = ["a", None, "", "Zürich", "x" * 300]
    got = A.strings(words)
    assert got.equals(pa.array(words, pa.string())) and got.null_count == 1
    assert A.strings(["bad \udcff"]).to_pylist() == ["bad ?"]  # valid UTF-8, never a crash
    fixed = np.array([b"C123", b"Cabc", b"Czzz"])
    assert A.strings(fixed).equals(pa.array(["C123", "Cabc", "Czzz"], pa.string()))
    assert A.strings([]).equals(pa.array([], pa.string()))


def test_dictionary_and_string_lists():
    codes = np.array([0, 1, 0, 2, 1])
    null = np.array([False, False, True, False, False])
    got = A.dictionary(codes, ["x", "y", "z"], null=null)
    assert got.to_pylist() == ["x", "y", None, "z", "y"]
    lists = [["a", "b"], None, [], ["c"]]
    assert A.string_lists(lists).equals(pa.array(lists, pa.list_(pa.string())))


def test_table_from_rows_equals_from_pylist():
    schema = pa.schema([("path", pa.string()), ("offset", pa.int64()), ("count", pa.int64()),
                        ("score", pa.float64()), ("ok", pa.bool_())])
    rows = [{"path": "a", "offset": 5, "count": 1, "score": 0.5, "ok": True},
            {"path": None, "offset": None, "score": 1.5},
            {"path": "ü", "offset": 2**40, "count": 3, "ok": False}]
    assert A.table_from_rows(rows, schema).equals(pa.Table.from_pylist(rows, schema))
    with pytest.raises(TypeError):
        A.table_from_rows(rows, pa.schema([("t", pa.list_(pa.int64()))]))


def test_packet_pass_does_not_import_pandas(tmp_path):
    """pandas costs a command-line ingest 0.12 s of start-up; the packet pass never needs it."""
    cap = write_pcap(tmp_path / "s.pcap", [eth(p) for p in handshake_session()])
    code = (
        "import sys, forensics\n"
        f"c = forensics.open_case({str(tmp_path / 'case')!r})\n"
        f"r = c.ingest({str(cap)!r}, protocols=False)\n"
        "assert r[0].records == 9 and r[0].sessions == 1, r\n"
        "print('pandas' in sys.modules)\n"
    )
    stdout = fresh_python(code)
    assert stdout.strip() == "False"


def test_command_line_ingest_never_imports_pandas(tmp_path):
    """The console script's ingest (protocols and carving on) builds every table without
    pandas; afterwards the same process still reads the case into pandas as usual."""
    cap = write_pcap(tmp_path / "h.pcap", [eth(p) for p in handshake_session()])
    case = tmp_path / "case"
    code = (
        "import sys\n"
        "from forensics import cli\n"
        "cli.ingest_process()\n"
        f"args = cli.build_parser().parse_args(['ingest', '-q', {str(case)!r}, {str(cap)!r}])\n"
        "assert cli._run(args, console=True) == 0\n"
        "print('pandas' in sys.modules)\n"
        "import forensics, pyarrow as pa\n"
        f"with forensics.open_case({str(case)!r}, read_only=True) as c:\n"
        "    print(c.sql('SELECT count(*) AS n FROM http')['n'][0])\n"
        "print(type(pa.table({'a': [1]}).to_pandas()).__name__)\n"
    )
    stdout = fresh_python(code)
    assert stdout.split()[-3:] == ["False", "1", "DataFrame"]


def test_arrays_without_pandas_keeps_pandas_usable():
    """After pyarrow's one try fails, arrays are built without pandas, pandas conversions
    still import it, and pandas objects are then recognised as such."""
    code = (
        "import sys, numpy as np, pyarrow as pa\n"
        "from forensics import _arrow as A\n"
        "assert A.arrays_without_pandas()\n"
        "pa.array(np.arange(3)); pa.array([1, None]).fill_null(0).to_numpy()\n"
        "pa.array([{'x': 1}], pa.struct([('x', pa.int64())]))\n"
        "print('pandas' in sys.modules)\n"
        "df = pa.table({'a': [1, 2]}).to_pandas()\n"
        "import pandas as pd\n"
        "print(type(df).__name__, pa.types.is_dictionary(pa.array(pd.Categorical(['a', 'b'])).type))\n"
        "print(A.arrays_without_pandas())\n"
    )
    stdout = fresh_python(code)
    assert stdout.splitlines() == ["False", "DataFrame True", "False"]


def test_packed_validity_is_used_as_is():
    values = np.arange(10, dtype=np.int32)
    null = np.array([i % 3 == 0 for i in range(10)])
    bits = np.packbits(~null, bitorder="little")
    assert A.column(values, pa.int32(), validity=bits).equals(pa.array(values, pa.int32(), mask=null))
    codes = np.array([0, 1] * 5)
    assert A.dictionary(codes, ["a", "b"], validity=bits).equals(A.dictionary(codes, ["a", "b"], null=null))
    with pytest.raises(ValueError):
        A.column(values, validity=bits[:1])


@pytest.mark.parametrize(
    "array",
    [
        pa.array([1, None, 3, -4], pa.int64()),
        pa.array([1, None, 3, 200], pa.uint8()),
        pa.array([0.5, None, 2.0], pa.float64()),
        pa.array([True, None, False, True, True, False, True, False, True], pa.bool_()),
        pa.array([1_700_000_000_000_000, None], pa.timestamp("us", tz="UTC")),
        pa.array([5, 6, None, 8, 9, 10, 11, 12, None, 14], pa.int32()).slice(3, 6),  # offset, nulls
        pa.array([True, False, None, True, False, True, True, False, True, None], pa.bool_()).slice(1, 8),
        pa.chunked_array([pa.array([1, None], pa.int16()), pa.array([None, 4], pa.int16())]),
        pa.chunked_array([], pa.int64()),
        pa.array([], pa.uint32()),
        pa.nulls(3, pa.int64()),
    ],
)
def test_values_equal_fill_null_to_numpy(array):
    fill = True if pa.types.is_boolean(array.type) else 7
    expected = array.fill_null(fill).to_numpy(zero_copy_only=False) if len(array) else None
    got = A.values(array, fill)
    if expected is None:
        assert got.size == 0
        return
    if pa.types.is_timestamp(array.type):
        expected = expected.astype(np.int64)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)
