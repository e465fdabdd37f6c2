"""plain: exact round trips of plain data, refusal of everything else, and a decoder that only says ValueError."""

import collections
import enum
import math
import random
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from moecoder.bench import plain
from moecoder.bench.plain import MAX_DEPTH, NotPlain, Ref, decode, encode

np = pytest.importorskip("numpy")

PLAIN_PY = Path(plain.__file__)


def canon(v):
    """A hashable form of plain value v that tells apart what the codec must keep apart: types all the way
    down, floats bit for bit (NaN included), dict order, numpy dtypes."""
    t = type(v)
    if t is float:
        return "float", struct.pack("<d", v)
    if t is complex:
        return "complex", struct.pack("<dd", v.real, v.imag)
    if t in (list, tuple):
        return t.__name__, tuple(map(canon, v))
    if t is dict:
        return "dict", tuple((canon(k), canon(x)) for k, x in v.items())
    if t in (set, frozenset):
        return t.__name__, tuple(sorted(map(repr, map(canon, v))))
    if t is np.ndarray:
        return "ndarray", v.dtype.str, v.dtype.char, v.shape, v.tobytes()
    if isinstance(v, np.generic):
        return t.__name__, v.dtype.str, v.dtype.char, v.tobytes()
    return t.__name__, v


def same(a, b) -> bool:
    return canon(a) == canon(b)


def roundtrip(value):
    data = encode(value)
    assert type(data) is bytes
    back = decode(data)
    assert same(value, back), (value, back)
    return data


NEG_NAN = struct.unpack("<d", struct.pack("<Q", 0xFFF8_0000_0000_0001))[0]  # sign and payload bits set

SCALARS = [
    None, True, False, 0, 1, -1, 127, 128, -128, -129, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1,
    10**100_000, -(10**100_000),
    0.0, -0.0, 1.5, float("inf"), float("-inf"), float("nan"), NEG_NAN, 5e-324, 1.7976931348623157e308,
    0j, complex(-0.0, float("nan")), 1 + 2j,
    "", "abc", "é€𝄞", "\ud800", "a\udfffb", "\ud83d\ude00", "\x00\n\"\\", "NaN",
    b"", b"\x00\xff", bytes(range(256)),
]


def test_scalars_round_trip_exactly():
    for value in SCALARS:
        roundtrip(value)


def test_bool_int_float_stay_distinct():
    for value in ([1, True, 1.0], (True, 1), {1: "int", 2.0: "float", False: "bool"}, {1.0, 2, True}):
        roundtrip(value)
    assert same(decode(encode([True] * 20)), [True] * 20)
    assert not same(decode(encode([1] * 20)), [True] * 20)


@pytest.mark.parametrize("n", [3, 40])  # below and above the fast paths' threshold
def test_containers_round_trip_exactly(n):
    values = [
        list(range(n)), tuple(range(n)), set(range(n)), frozenset(range(n)),
        [float(i) / 3 for i in range(n)], (-0.0,) * n, [float("nan"), NEG_NAN] * n, [1.0, float("inf")] * n,
        [2**64 + i for i in range(n)], [-(2**63)] * n,  # past int64, and its edge
        [str(i) + "\ud800" for i in range(n)], ["NaN"] * n, [None, True, 2, 3.5, "x"] * n, [None] * n,
        [(i, str(i)) for i in range(n)], [[i, -i] for i in range(n)], [(i,) for i in range(n)], [(), ()] * n,
        {(i, "k"): [i] for i in range(n)}, {str(i): i for i in range(n)}, {i: None for i in range(n)},
        {frozenset({i}) for i in range(n)}, {(i, float(i)) for i in range(n)},
        [b"x" * i for i in range(n)], [1j] * n, [[]] * n, [{}] * n, [(1, 2), [1, 2]] * n, [[1, [2]]] * n,
        [1, 2.0] * n, [(1, 2.0), (1.0, 2)] * n, [(float("nan"),)] * n,
        [2**53, -(2**53), 0.5, 7] * n, [2**53 + 1, 0.5] * n, [1, float("nan"), NEG_NAN, -0.0, float("-inf")] * n,
    ]
    for value in values:
        roundtrip(value)


def test_insertion_order_of_dicts_kept():
    d = {k: k for k in (5, "a", 1.5, (1,), None, -3)}
    assert list(decode(encode(d))) == list(d)


def test_ints_past_the_decimal_limit_and_json_limit():
    big = [10**5000 + i for i in range(20)]  # JSON could not write these; the walk does, in binary
    roundtrip(big)
    roundtrip([(10**5000, "a")] * 20)


def test_numpy_scalars_and_arrays_rebuilt_as_the_same_numpy_values():
    values = [
        np.bool_(True), np.int8(-3), np.uint8(250), np.int16(-300), np.uint16(6), np.int32(-7), np.uint32(8),
        np.int64(-(2**62)), np.uint64(2**64 - 1), np.longlong(5), np.ulonglong(6), np.float16(1.5), np.float32(0.1),
        np.float64(np.nan), np.float64(-0.0), np.longdouble("1.1"), np.complex64(1 - 2j), np.complex128(3j),
        np.clongdouble(1 + 1j), np.str_("é𝄞"),
        np.array(5), np.array(2.5), np.array(True), np.arange(12).reshape(3, 4), np.arange(12.0).reshape(2, 3, 2).T,
        np.zeros((0, 3)), np.zeros((2, 0, 5), dtype=np.int8), np.array([True, False]), np.array(["ab", "c"]),
        np.array([1, 2], dtype=">i4"), np.array([1.5], dtype=">f8"), np.array([np.nan, -np.inf], dtype=np.float32),
        np.ones(10**5), np.array([1 + 2j], dtype=np.complex64), [np.float64(1.0), np.int64(1), np.bool_(1)],
        {np.int64(3): np.array([1])}, (np.arange(3), np.arange(3.0)),
    ]
    for value in values:
        roundtrip(value)
    assert type(decode(encode(np.longlong(5)))) is np.longlong  # not int64: the type char is kept


def test_numpy_is_not_imported_for_plain_values():
    code = (
        f"exec(open({str(PLAIN_PY)!r}).read())\n"
        "v = ([1, 2.5, 'x', b'y', {1: (2,)}, {3}], list(range(100)), ['s'] * 50, [0.5] * 50, 10**5000)\n"
        "assert decode(encode(v)) == v\n"
        "import sys; assert 'numpy' not in sys.modules, 'numpy imported'\n"
        "assert not [m for m in sys.modules if m.startswith('moecoder')], 'moecoder imported'\n"
        "print('ok')\n"
    )
    run = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout == "ok\n", run.stderr


class Anything:
    def __eq__(self, other):
        return True

    __hash__ = object.__hash__


class LyingMeta(type):
    @property
    def __name__(cls):
        return "passed"


class Sneaky(metaclass=LyingMeta):
    pass


class Str(str):
    def __str__(self):  # a subclass's own methods never decide what crosses
        return "not what it holds"


class Int(int):
    def __eq__(self, other):
        return True

    __hash__ = int.__hash__


def _matrix():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return np.matrix([[1]])


NOT_PLAIN = [
    Anything(), Int(1), type("L", (list,), {"__eq__": lambda s, o: True})(), bytearray(b"x"), memoryview(b"x"),
    type("D", (dict,), {"__ne__": lambda s, o: False})(), range(3), object(), len, Exception("x"), iter([]), Ref,
    collections.Counter,
    np.array([1, None], dtype=object), np.datetime64("2020-01-01"), np.array([1], dtype="M8[s]"),
    np.zeros(2, dtype=[("a", "<i4")]), _matrix(), np.ma.masked_array([1]), np.array([b"x"]), np.void(b"x"),
    type("A", (np.ndarray,), {})(3), type("G", (np.float64,), {})(1.0),
]


@pytest.mark.parametrize("value", NOT_PLAIN, ids=lambda v: type(v).__name__)
def test_everything_else_is_not_plain_wherever_it_hides(value):
    for holder in (value, [value], (1, value), {"k": value}, [[1] * 20, [value] * 20]):
        with pytest.raises(NotPlain, match="is not plain data"):
            encode(holder)
    try:
        key = (1, value)
        hash(key)
    except TypeError:
        return
    with pytest.raises(NotPlain):
        encode({key: 1})


INHERITED_EQUALITY = [
    (Str("abc"), "abc"), (type("F", (float,), {})(1.5), 1.5), (type("L", (list,), {})([1, (2,)]), [1, (2,)]),
    (type("D", (dict,), {"keys": lambda s: ["lie"]})(a=1), {"a": 1}), (type("T", (tuple,), {})((1, 2)), (1, 2)),
    (type("B", (bytes,), {})(b"x"), b"x"), (type("S", (set,), {})({1}), {1}), (type("C", (complex,), {})(1j), 1j),
    (collections.namedtuple("P", "x y")(1, 2), (1, 2)), (enum.IntEnum("E", {"A": 3}).A, 3),
    (collections.defaultdict(int, a=2), {"a": 2}),
]


@pytest.mark.parametrize("value, crosses_as", INHERITED_EQUALITY, ids=lambda v: type(v).__name__)
def test_a_subclass_with_its_base_equality_crosses_as_its_base(value, crosses_as):
    for holder, expected in ((value, crosses_as), ([value] * 20, [crosses_as] * 20)):
        assert same(decode(encode(holder)), expected)


@pytest.mark.parametrize("value", [collections.Counter("abca"), collections.OrderedDict(b=1, a=2),
                                   collections.deque([3, (4,)])], ids=lambda v: type(v).__name__)
def test_counter_ordereddict_and_deque_cross_as_themselves(value):
    back = decode(encode([value]))[0]
    assert type(back) is type(value) and back == value and list(back) == list(value)


def test_a_wrapper_around_the_wrong_value_is_refused():
    forged = encode(collections.Counter(a=1)).replace(b"WC", b"WQ")
    with pytest.raises(ValueError):
        decode(forged)


def test_not_plain_names_the_type_and_a_metaclass_cannot_choose_the_name():
    with pytest.raises(NotPlain, match=r"^Anything is not plain data$"):
        encode([1, Anything()])
    with pytest.raises(NotPlain, match=r"^Sneaky is not plain data$") as raised:
        encode(Sneaky())
    assert type(str(raised.value)) is str


def test_depth_cap_both_ways_and_no_recursion_error():
    deep = []
    for _ in range(MAX_DEPTH - 1):
        deep = [deep]
    roundtrip(deep)  # MAX_DEPTH lists
    with pytest.raises(NotPlain, match="nest deeper"):
        encode([deep])
    for make in (lambda x: [x], lambda x: (x,), lambda x: {"k": x}, lambda x: frozenset([x])):
        very = 0
        for _ in range(100_000):
            very = make(very)
        with pytest.raises(NotPlain):
            encode(very)
    loop = []
    loop.append(loop)
    with pytest.raises(NotPlain):
        encode(loop)
    # 100,000 list tags nested one in another: refused at the cap, not by the stack.
    hostile = plain._MAGIC + (b"l*" + struct.pack("<Q", 1)) * 100_000 + b"N"
    with pytest.raises(ValueError, match="nest deeper"):
        decode(hostile)
    rows = [[1, 2]] * 20  # rows at the last level: the fast path must not cross the cap either
    value = rows
    for _ in range(MAX_DEPTH - 2):
        value = [value]
    roundtrip(value)
    with pytest.raises(NotPlain):
        encode([value])


def test_refs_resolve_on_the_program_side_only():
    class Node:
        pass

    root = Node()
    data = encode((Ref("root"), [Ref("root"), 3]))
    value = decode(data, refs={"root": root})
    assert value[0] is root and value[1][0] is root and value[1][1] == 3
    assert all(x is root for x in decode(encode([Ref("root")] * 20), refs={"root": root}))
    with pytest.raises(ValueError, match="reference"):
        decode(data)
    with pytest.raises(ValueError, match="unknown reference"):
        decode(data, refs={"other": root})
    with pytest.raises(ValueError, match="unhashable"):
        decode(encode({Ref("x")}), refs={"x": []})


# ------------------------------------------------------------------------------------- hostile input


def msg(*parts) -> bytes:
    return plain._MAGIC + b"".join(parts)


def q(n) -> bytes:
    return struct.pack("<Q", n)


def dtype(code: bytes) -> bytes:
    return bytes((len(code),)) + code


HASH_MOD = sys.hash_info.modulus  # hash(i * HASH_MOD) == 0 for every int i

PACKED_SAME_HASH = [r + k * HASH_MOD for r in range(20) for k in range(-4, 4)]  # all in int64

HOSTILE = {  # name: (message, what the error says)
    "empty": (b"", "bad header"),
    "no header": (b"N", "bad header"),
    "bad header": (b"PL\x02N", "bad header"),
    "not bytes": ("PL\x01N", "takes bytes"),
    "no value": (msg(), "truncated"),
    "garbage after": (msg(b"NN"), "garbage"),
    "unknown tag": (msg(b"?"), "unknown tag"),
    "truncated int64": (msg(b"I", b"\x01\x02"), "truncated"),
    "truncated int": (msg(b"i", q(5), b"\x01"), "truncated"),
    "truncated length": (msg(b"s", b"\x01\x00"), "truncated"),
    "truncated float": (msg(b"f\x00\x00"), "truncated"),
    "huge length": (msg(b"y", q(2**64 - 1)), "truncated"),
    "huge count": (msg(b"l*", q(2**63)), "truncated"),
    "count past the data": (msg(b"l*", q(3), b"NN"), "truncated"),
    "bad utf-8": (msg(b"s", q(2), b"\xff\xfe"), "utf-8"),
    "truncated utf-8": (msg(b"s", q(1), b"\xc3"), "utf-8"),
    "unknown form": (msg(b"l?", q(0)), "unknown items form"),
    "bad packed length": (msg(b"lq", q(7), b"\x00" * 7), "multiple of 8"),
    "unhashable set item": (msg(b"e*", q(1), b"l*", q(0)), "unhashable"),
    "unhashable dict key": (msg(b"d*", q(1), b"l*", q(0), b"*", q(1), b"N"), "unhashable"),
    "set of json arrays": (msg(b"ej", q(4), b"[[]]"), "not scalars"),
    "unhashable set of rows": (msg(b"eL", q(4), b"[[]]"), "unhashable"),
    "keys without values": (msg(b"d*", q(1), b"N", b"*", q(0)), "unequal"),
    "mixed bad length": (msg(b"lm", q(10), b"\x01" * 10), "multiple of 9"),
    "mixed int inf": (msg(b"lm", q(9), b"\x01", struct.pack("<d", float("inf"))), "not finite"),
    "mixed int nan": (msg(b"lm", q(9), b"\x01", struct.pack("<d", float("nan"))), "NaN"),
    "json not an array": (msg(b"lj", q(3), b'"a"'), "not an array"),
    "json object": (msg(b"lj", q(9), b'[{"a":1}]'), "not scalars"),
    "json nested": (msg(b"lj", q(7), b"[[1,2]]"), "not scalars"),
    "json deep": (msg(b"lj", q(200_000), b"[" * 100_000 + b"]" * 100_000), "nest too deeply"),
    "json rows deep": (msg(b"lL", q(200_000), b"[" * 100_000 + b"]" * 100_000), "nest too deeply"),
    "json rows not arrays": (msg(b"lL", q(3), b"[1]"), "not arrays"),
    "json rows nested": (msg(b"lT", q(7), b"[[[1]]]"), "not scalars"),
    "json bad": (msg(b"lj", q(2), b"[1"), "Expecting"),
    "json huge int": (msg(b"lj", q(5002), b"[" + b"9" * 5000 + b"]"), "4300 digits"),
    "json huge negative int": (msg(b"lj", q(5003), b"[-" + b"9" * 5000 + b"]"), "4300 digits"),
    "json rows huge int": (msg(b"lL", q(5004), b"[[" + b"9" * 5000 + b"]]"), "4300 digits"),
    "dtype object": (msg(b"g", dtype(b"|O"), q(8), b"\x00" * 8), "not allowed"),
    "dtype void": (msg(b"g", dtype(b"|V8"), q(8), b"\x00" * 8), "not allowed"),
    "dtype datetime": (msg(b"g", dtype(b"<M8"), q(8), b"\x00" * 8), "not allowed"),
    "dtype structured": (msg(b"g", dtype(b"[('a','<i4')]"), q(4), b"\x00" * 4), "not allowed"),
    "dtype str": (msg(b"g", dtype(b"<f8"), q(8), b"\x00" * 8), "not allowed"),
    "dtype unsized U": (msg(b"g", dtype(b"<U0"), q(0)), "not allowed"),
    "dtype huge U": (msg(b"a", dtype(b"<U999999999"), b"\x01", q(0), q(0)), "not understood"),
    "dtype truncated": (msg(b"g", b"\x05<q"), "truncated"),
    "numpy wrong length": (msg(b"g", dtype(b"<q"), q(4), b"\x00" * 4), "wrong length"),
    "numpy bool not 0 or 1": (msg(b"a", dtype(b"|?"), b"\x01", q(2), q(2), b"\x01\x02"), "not valid"),
    "numpy scalar bool 255": (msg(b"g", dtype(b"|?"), q(1), b"\xff"), "not valid"),
    "numpy U past unicode": (msg(b"g", dtype(b"<U1"), q(4), struct.pack("<I", 0x110000)), "not valid"),
    "numpy shape mismatch": (msg(b"a", dtype(b"<q"), b"\x01", q(2), q(8), b"\x00" * 8), "wrong length"),
    "numpy too many dims": (msg(b"a", dtype(b"<q"), b"\x21", q(1) * 33, q(8), b"\x00" * 8), "dimensions"),
    "numpy shape overflow": (msg(b"a", dtype(b"<q"), b"\x02", q(2**63), q(2), q(8), b"\x00" * 8), "out of range"),
    "numpy empty but huge": (msg(b"a", dtype(b"<q"), b"\x03", q(0), q(2**62), q(2**62), q(0)), "refused"),
    "numpy dims past intp": (msg(b"a", dtype(b"<q"), b"\x02", q(0), q(2**64 - 1), q(0)), "out of range"),
    "numpy truncated shape": (msg(b"a", dtype(b"<q"), b"\x02", q(0)), "truncated"),
    "set of ints sharing a hash": (encode({i * HASH_MOD for i in range(1, 200)}), "share hashes"),
    "packed set sharing hashes": (msg(b"eq", q(8 * 160), struct.pack("<160q", *PACKED_SAME_HASH)), "share hashes"),
    "dict keys sharing a hash": (encode({(i * HASH_MOD, 0.5): i for i in range(200)}), "share hashes"),
    "ref on the judge side": (msg(b"r", q(1), b"x"), "reference"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_messages_raise_value_error(name):
    data, says = HOSTILE[name]
    with pytest.raises(ValueError, match=says):
        decode(data)


def test_a_few_shared_hashes_still_decode():
    for value in ({-1, -2}, {i * HASH_MOD for i in range(65)}, {i * HASH_MOD: i for i in range(65)}):
        roundtrip(value)


def test_json_int_bound_holds_with_the_interpreter_limit_off():
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        with pytest.raises(ValueError):
            decode(HOSTILE["json huge int"][0])
        value = [10**5000 + i for i in range(20)] + [None]  # with the limit off the encoder keeps them out of JSON
        assert same(decode(encode(value)), value)
    finally:
        sys.set_int_max_str_digits(old)


def test_bytearray_and_memoryview_messages_decode():
    data = encode([1, "a"])
    assert decode(bytearray(data)) == [1, "a"] and decode(memoryview(data)) == [1, "a"]


def random_value(rng: random.Random, depth: int = 0):
    """A random plain value: scalars of every type, containers of every kind, runs long enough for the fast paths."""
    pick = rng.random()
    if depth > 4 or pick < 0.45:
        return rng.choice(
            [
                None, rng.random() < 0.5, rng.randint(-(2**70), 2**70), rng.randint(-5, 5), rng.uniform(-1e9, 1e9),
                rng.choice([float("nan"), NEG_NAN, -0.0, float("inf")]), complex(rng.random(), -1),
                "".join(chr(rng.choice([rng.randrange(128), rng.randrange(0x110000)])) for _ in range(4)),
                rng.randbytes(rng.randint(0, 6)), np.float64(rng.random()), np.arange(rng.randint(0, 5)),
            ]
        )
    n = rng.choice([0, 1, 3, 17, 40])
    if pick < 0.6:  # homogeneous runs take the packed and JSON forms
        kinds = [lambda: rng.randint(-9, 9), rng.random, lambda: str(rng.random()), lambda: rng.random() < 0.5]
        scalar = rng.choice(kinds)
        items = [scalar() for _ in range(n)]
        if rng.random() < 0.3:
            row = rng.choice([tuple, list])
            items = [row(items[i : i + 2]) for i in range(0, n, 2)]
    else:  # mixed items: long runs near the top only, to keep values small
        items = [random_value(rng, depth + 1) for _ in range(n if depth == 0 else min(n, 3))]
    kind = rng.choice([list, tuple, set, frozenset, dict])
    if kind is dict:
        return {_hashable(rng, k): v for k, v in zip(items, items[::-1])}
    if kind in (set, frozenset):
        return kind(_hashable(rng, x) for x in items)
    return kind(items)


def _hashable(rng, value):
    try:
        hash(value)
    except TypeError:
        return rng.randint(0, 10**30)
    return value


def test_random_nested_values_round_trip():
    rng = random.Random(1234)
    for _ in range(400):
        roundtrip(random_value(rng))


def test_fuzzed_messages_raise_only_value_error_or_decode_to_plain_data():
    rng = random.Random(99)
    corpus = [encode(random_value(rng)) for _ in range(60)] + [encode(v) for v in SCALARS[:-4]]
    corpus += [data for data, _ in HOSTILE.values() if type(data) is bytes]
    decoded = 0
    for _ in range(20_000):
        data = bytearray(rng.choice(corpus))
        for _ in range(rng.randint(1, 3)):
            op, at = rng.randrange(4), rng.randrange(len(data) + 1)
            if op == 0 and data:
                data[min(at, len(data) - 1)] = rng.randrange(256)
            elif op == 1:
                del data[at:]
            elif op == 2:
                data[at:at] = rng.randbytes(rng.randint(1, 9))
            else:
                del data[at : at + rng.randint(1, 9)]
        try:
            value = decode(bytes(data))
        except ValueError:
            continue
        decoded += 1
        encode(value)  # whatever decodes is plain data again
    assert decoded > 100  # the mutations also reach the inside of the parser, not just its header check
