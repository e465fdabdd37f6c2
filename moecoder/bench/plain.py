"""Plain data across the jail boundary: an exact codec for built-in values that runs no code from its input.

The program under test and the judge exchange arguments and results as bytes in this format, never as
pickles. `encode` accepts only plain values — None, bool, int (any size), float (every bit kept: NaN
payloads, infinities, -0.0), complex, str (lone surrogates included), bytes, and list, tuple, dict
(insertion order kept), set and frozenset of plain values nested at most `MAX_DEPTH` containers deep —
plus numpy scalars and arrays of booleans, numbers or fixed-width unicode (dtype, shape and raw bytes,
rebuilt as the same numpy type by the judge) and `Ref`. Values cross as exact built-in types: an
instance of a subclass that inherits its base's equality unchanged (a namedtuple, an IntEnum member,
a defaultdict) crosses as its base type, read with the base's own methods; Counter, OrderedDict and
deque cross as themselves (rebuilt from a dict or list); a class with its own `__eq__` is refused like
any other object (`NotPlain`), so no program-defined comparison ever runs in the judge.
Identity is not kept: an object reached twice is sent twice.

`decode` is the judge's parser for bytes written by an untrusted process: on any malformed input it
raises `ValueError` (`NotPlain` is one), in time linear in the input, with no recursion error, no
import other than numpy for numpy tags (dtypes from a whitelist only), and no call into the data.

This file imports only the standard library and not moecoder: its source is also executed inside the
jail, beside the zygote, under `python -I -S`.

Format (version 1, little-endian; Q = u64 count or byte length):
    message  := b"PL\\x01" node
    node     := b"N" | b"T" | b"F"                       None, True, False
              | b"I" i64 | b"i" Q bytes                  int: in int64 / any, two's complement
              | b"f" f64 | b"c" f64 f64                  float, complex
              | b"s" Q utf-8 (surrogatepass) | b"y" Q bytes
              | (b"l" | b"t" | b"e" | b"z") items        list, tuple, set, frozenset
              | b"d" items items                         dict: keys, then values
              | b"a" dtype u8-ndim Q*ndim Q raw           numpy.ndarray (C order)
              | b"g" dtype Q raw                         numpy scalar
              | b"r" Q utf-8                             Ref (resolved by decode(refs=...))
              | b"W" (b"C" | b"O" | b"Q") node           Counter / OrderedDict (of a dict), deque (of a list)
    items    := b"*" Q node*                             one node per item
              | b"q" Q i64*  | b"d" Q f64*               all ints in int64 / all floats
              | b"m" Q u8*n f64*n                        ints (|i| <= 2**53, mask 1) and floats
              | b"j" Q json                              flat JSON array of None/bool/int/float/str
              | (b"L" | b"T") Q json                     JSON array of lists / tuples of those
    dtype    := u8 length + ascii: byte order + numpy type char (b"<q", b"|?", b"<U5")
The JSON forms exist for speed (C encoder and decoder); they never hold a NaN (its sign and payload
would be lost) and never an integer of more than 4300 digits.
"""

import array
import codecs
import collections
import itertools
import json
import operator
import os
import re
import struct
import sys

__all__ = ["MAX_DEPTH", "NotPlain", "Ref", "decode", "encode", "read_exact"]

MAX_DEPTH = 200  # containers nested deeper than this are refused, both ways
_MAGIC = b"PL\x01"
_FAST_MIN = 16  # below this many items a container is walked; the C fast paths cost more to set up
_MAX_INT_DIGITS = 4300  # CPython's default int <-> decimal str limit: a bound on JSON number tokens
_MAX_NDIM = 32
# Ints' hashes are not randomized: n items crafted to share one hash make a set or dict cost n**2
# comparisons. Honest data has a handful at most; past this many items whose hash another item
# already has, the decoder refuses (a set of the hashes themselves costs no such comparisons).
_MAX_SAME_HASH = 64
_JSON_SCALARS = frozenset((type(None), bool, int, float, str))

_Q = struct.Struct("<Q")
_q = struct.Struct("<q")
_INT64 = 2**63
_EXACT_IN_FLOAT = 2**53  # every int up to this size converts to float64 and back unchanged
_F = struct.Struct("<d")
_C = struct.Struct("<dd")
_LITTLE = sys.byteorder == "little"
# numpy's type chars for the kinds b, i, u, f, c, and U with its width; the char (not `dtype.str`)
# keeps numpy.longlong apart from numpy.int64.
_DTYPE = re.compile(rb"[<>|=](?:[?bBhHiIlLqQefdgFDG]|U[1-9][0-9]{0,8})\Z")
_DTYPE_CHARS = frozenset("?bBhHiIlLqQefdgFDG")

_JSON_ENC = json.JSONEncoder(ensure_ascii=False, check_circular=False, separators=(",", ":"))


# Standard-library containers whose equality is their own (Counter ignores zero counts, OrderedDict
# compares order with another OrderedDict): sent as their base value and rebuilt as themselves.
_WRAPPED = {collections.Counter: (b"C", dict), collections.OrderedDict: (b"O", dict), collections.deque: (b"Q", list)}
_WRAPPED_CONTENT = {dict: lambda v: dict(dict.items(v)), list: list}
# How the content of a subclass instance is read with the built-in type's own methods (never the
# subclass's overrides of __str__, __iter__, items...), as the built-in's equality would see it.
_CONTENT = {
    int: int.__int__, float: float.__float__, complex: complex.__complex__, str: str.__str__,
    bytes: bytes.__bytes__, list: lambda v: list(list.__iter__(v)), tuple: lambda v: tuple(tuple.__iter__(v)),
    dict: lambda v: dict(dict.items(v)), set: lambda v: set(set.__iter__(v)),
    frozenset: lambda v: frozenset(frozenset.__iter__(v)),
}


class NotPlain(ValueError):
    """A value that is not plain data, or a message that does not decode to plain data."""


class Ref:
    """A name for a value that lives in the program's process (e.g. MBPP/367's tree of its own `Node`s).

    The judge encodes it; the program's side decodes it with `decode(data, refs={name: value})`.
    """

    __slots__ = ("name",)

    def __init__(self, name: str):
        if type(name) is not str:
            raise TypeError("Ref name must be a str")
        self.name = name

    def __eq__(self, other):
        return type(other) is Ref and other.name == self.name

    def __hash__(self):
        return hash((Ref, self.name))

    def __repr__(self):
        return f"Ref({self.name!r})"


def _type_name(cls) -> str:
    # type.__name__ read through `type` itself: a metaclass cannot put its own text in the message.
    return str.__str__(type.__dict__["__name__"].__get__(cls, type))[:100]


def _not_plain(value):
    return NotPlain(f"{_type_name(type(value))} is not plain data")


def _int_json_safe() -> bool:
    # The C JSON encoder writes ints as decimal, which CPython refuses past its digit limit; with the
    # limit raised or off (a program may do that) a longer token could come out, so ints take the walk.
    get = getattr(sys, "get_int_max_str_digits", None)
    return get is not None and 0 < get() <= _MAX_INT_DIGITS


# --------------------------------------------------------------------------------------- encoding


def encode(value) -> bytes:
    """The message for `value`; raises NotPlain naming the first type that is not plain data."""
    out = [_MAGIC]
    try:
        _enc_walk((value,), 0, out)
    except RecursionError:  # two frames a level: only when the caller already stands deep in the stack
        raise NotPlain("value nests too deeply") from None
    return b"".join(out)


def _enc_other(v, depth, out):
    kind = type(v)
    if kind is Ref:
        _enc_str(v.name, b"r", out)
    elif kind.__module__ == "numpy":
        _enc_numpy(v, out)
    elif kind in _WRAPPED:  # a standard-library container with its own equality, rebuilt as itself
        if depth >= MAX_DEPTH:
            raise NotPlain(f"containers nest deeper than {MAX_DEPTH}")
        tag, base = _WRAPPED[kind]
        out.append(b"W" + tag)
        _enc_walk((_WRAPPED_CONTENT[base](v),), depth + 1, out)
    else:
        base = _inherited_equality(kind)
        if base is None:
            raise _not_plain(v)
        _enc_walk((_CONTENT[base](v),), depth, out)


def _inherited_equality(kind):
    """The built-in type whose equality `kind` inherits unchanged (a namedtuple's tuple, an IntEnum's
    int, defaultdict's dict), or None. Its instances cross as that type, rebuilt from their items in
    the sender's process, so no method of theirs ever runs where they are compared."""
    for base in _CONTENT:
        if issubclass(kind, base):
            mro = kind.__mro__
            own = mro[:mro.index(base)] if base in mro else mro
            return None if any("__eq__" in vars(cls) or "__ne__" in vars(cls) for cls in own) else base
    return None


def _enc_none(v, depth, out):
    out.append(b"N")


def _enc_bool(v, depth, out):
    out.append(b"T" if v else b"F")


def _enc_int(v, depth, out):
    if -_INT64 <= v < _INT64:
        out.append(b"I" + _q.pack(v))
    else:
        n = v.bit_length() // 8 + 1
        out.append(b"i" + _Q.pack(n) + v.to_bytes(n, "little", signed=True))


def _enc_float(v, depth, out):
    out.append(b"f" + _F.pack(v))


def _enc_complex(v, depth, out):
    out.append(b"c" + _C.pack(v.real, v.imag))


def _enc_str(v, tag, out):
    b = v.encode("utf-8", "surrogatepass")
    out.append(tag + _Q.pack(len(b)))
    out.append(b)


def _enc_bytes(v, depth, out):
    out.append(b"y" + _Q.pack(len(v)))
    out.append(v)


def _container(tag):
    def enc(v, depth, out):
        if depth >= MAX_DEPTH:
            raise NotPlain(f"containers nest deeper than {MAX_DEPTH}")
        out.append(tag)
        if not _enc_fast(v, depth + 1, out):  # two stack frames a level: enc, _enc_walk
            _enc_walk(v, depth + 1, out)

    return enc


def _enc_dict(v, depth, out):
    if depth >= MAX_DEPTH:
        raise NotPlain(f"containers nest deeper than {MAX_DEPTH}")
    out.append(b"d")
    for part in (list(v), list(v.values())):
        if not _enc_fast(part, depth + 1, out):
            _enc_walk(part, depth + 1, out)


def _enc_fast(items, depth, out) -> bool:
    """Writes the `items` header; True when the items went with it in a fast form, False for a walk."""
    if len(items) >= _FAST_MIN:
        fast = _fast_items(items, depth)
        if fast is not None:
            out.append(fast[0] + _Q.pack(len(fast[1])))
            out.append(fast[1])
            return True
    out.append(b"*" + _Q.pack(len(items)))
    return False


def _enc_walk(items, depth, out):
    for item in items:
        enc = _ENCODERS.get(type(item))
        if enc is None:
            _enc_other(item, depth, out)
        else:
            enc(item, depth, out)


def _fast_items(items, depth):
    """(form, payload) for items that one C routine can write, or None."""
    types = set(map(type, items))
    if types == {int}:
        try:
            a = array.array("q", items)
        except OverflowError:
            pass
        else:
            return b"q", _le(a).tobytes()
    if types == {float}:
        return b"d", _le(array.array("d", items)).tobytes()
    if types == {int, float}:
        mixed = _mixed_numbers(items)
        if mixed is not None:
            return b"m", mixed
    if types <= _JSON_SCALARS:
        return _json_items(b"j", items, int in types)
    if depth < MAX_DEPTH and (types == {list} or types == {tuple}):
        inner = set(map(type, itertools.chain.from_iterable(items)))
        if inner <= _JSON_SCALARS:
            return _json_items(b"L" if list in types else b"T", items, int in inner)
    return None


def _mixed_numbers(items):
    """A mask (1 for an int) and every item as a float64, when each int is exact as a float; or None.
    (JSON would write and parse each float's decimal repr: several times slower.)"""
    mask = bytes(map(operator.is_, map(type, items), itertools.repeat(int)))
    ints = list(itertools.compress(items, mask))
    if max(ints) > _EXACT_IN_FLOAT or min(ints) < -_EXACT_IN_FLOAT:
        return None
    return mask + _le(array.array("d", items)).tobytes()


def _json_items(form, items, has_int):
    if has_int and not _int_json_safe():
        return None
    try:
        text = _JSON_ENC.encode(items if type(items) in (list, tuple) else list(items))
    except ValueError:  # an int past the digit limit
        return None
    if "NaN" in text:  # JSON's NaN has no sign or payload; such items take the exact walk
        return None
    return form, text.encode("utf-8", "surrogatepass")


def _le(a):
    if not _LITTLE:
        a.byteswap()
    return a


def _enc_numpy(v, out):
    np = sys.modules.get("numpy")
    if np is None:
        raise _not_plain(v)
    if type(v) is np.ndarray:
        head, shape = b"a", v.shape
    elif isinstance(v, np.generic) and type(v) is v.dtype.type:
        head, shape = b"g", None
    else:
        raise _not_plain(v)
    dt = v.dtype
    if dt.kind == "U" and dt.itemsize > 0:
        code = dt.str
    elif dt.kind in "biufc" and dt.char in _DTYPE_CHARS:
        code = dt.str[0] + dt.char
    else:
        raise NotPlain(f"numpy {_type_name(type(v))} of dtype {dt.str} is not plain data")
    code = code.encode("ascii")
    out.append(head + bytes((len(code),)) + code)
    if shape is not None:
        out.append(bytes((len(shape),)) + b"".join(map(_Q.pack, shape)))
    raw = v.tobytes()
    out.append(_Q.pack(len(raw)))
    out.append(raw)


_ENCODERS = {
    type(None): _enc_none,
    bool: _enc_bool,
    int: _enc_int,
    float: _enc_float,
    complex: _enc_complex,
    str: lambda v, depth, out: _enc_str(v, b"s", out),
    bytes: _enc_bytes,
    list: _container(b"l"),
    tuple: _container(b"t"),
    set: _container(b"e"),
    frozenset: _container(b"z"),
    dict: _enc_dict,
}


# --------------------------------------------------------------------------------------- decoding


def decode(data: bytes, *, refs=None):
    """The value of message `data`. Reference tags resolve through `refs[name]`; with refs=None
    (the judge reading the program's output) they are refused. Raises ValueError on any bad input."""
    if type(data) is not bytes:
        if not isinstance(data, (bytearray, memoryview)):
            raise ValueError(f"plain.decode takes bytes, not {_type_name(type(data))}")
        data = bytes(data)
    if data[:3] != _MAGIC:
        raise ValueError("not a plain-data message (bad header)")
    value, pos = _Reader(data, refs).value(3)
    if pos != len(data):
        raise ValueError(f"{len(data) - pos} bytes of garbage after the value")
    return value


_CONTAINERS = frozenset(b"ltezd")
_WRAP = ord("W")
_UNWRAP = {tag: (kind, base) for kind, (tag, base) in _WRAPPED.items()}
_KINDS = {ord("e"): set, ord("z"): frozenset}


def _still_open(frame, value):
    """Add a finished item to its open container; True while the container waits for more."""
    frame[1].append(value)
    frame[2] -= 1
    return frame[2] > 0


class _Reader:
    """A parser for one message: a loop over an explicit stack of open containers (no recursion, so
    the depth cap, not the caller's stack, bounds nesting). Readers take a position and return
    (value, next position)."""

    __slots__ = ("data", "mv", "refs")

    def __init__(self, data, refs):
        self.data = data
        self.mv = memoryview(data)
        self.refs = refs

    def value(self, pos):
        data = self.data
        stack = []  # open containers: [tag, items so far, items still to read, dict keys or None]
        header = False  # the next bytes are the `items` header of stack[-1]
        while True:
            if header:
                header = False
                frame = stack[-1]
                frame[1], pos, frame[2] = self.items(pos, len(stack))
                if frame[2]:
                    continue
            else:
                try:
                    tag = data[pos]
                except IndexError:
                    raise ValueError("message truncated") from None
                if tag in _CONTAINERS:
                    if len(stack) >= MAX_DEPTH:
                        raise ValueError(f"containers nest deeper than {MAX_DEPTH}")
                    stack.append([tag, None, 0, None])
                    pos += 1
                    header = True
                    continue
                if tag == _WRAP:  # one node follows, rebuilt as the wrapper's type when it closes
                    if len(stack) >= MAX_DEPTH:
                        raise ValueError(f"containers nest deeper than {MAX_DEPTH}")
                    if data[pos + 1:pos + 2] not in _UNWRAP:
                        raise ValueError(f"unknown wrapper at byte {pos}")
                    stack.append([tag, [], 1, data[pos + 1:pos + 2]])
                    pos += 2
                    continue
                read = _SCALARS.get(tag)
                if read is None:
                    raise ValueError(f"unknown tag {tag:#04x} at byte {pos}")
                value, pos = read(self, pos + 1)
                if not stack:
                    return value, pos
                if _still_open(stack[-1], value):
                    continue
            # stack[-1] has all its items: close it, and every parent it completes.
            while True:
                frame = stack[-1]
                if frame[0] == ord("d") and frame[3] is None:  # keys read; the values follow
                    frame[3] = frame[1]
                    header = True
                    break
                stack.pop()
                value = _build(frame)
                if not stack:
                    return value, pos
                if _still_open(stack[-1], value):
                    break

    def items(self, pos, depth):
        """(items read so far, next position, items still to read as nodes) of an `items` header;
        `depth` counts the open containers, the one these items belong to included."""
        try:
            form = self.data[pos]
        except IndexError:
            raise ValueError("message truncated") from None
        if form == ord("*"):
            start, pos = self.span(pos + 1, 8)
            count = _Q.unpack_from(self.data, start)[0]
            if count > len(self.data) - pos:  # each item takes at least one byte
                raise ValueError("message truncated")
            return [], pos, count
        read = _FORMS.get(form)
        if read is None:
            raise ValueError(f"unknown items form {form:#04x} at byte {pos}")
        items, pos = read(self, pos + 1, depth)
        return items, pos, 0

    def span(self, pos, n):
        """(start, end) of n bytes at pos; ValueError past the end."""
        end = pos + n
        if end > len(self.data):
            raise ValueError("message truncated")
        return pos, end

    def sized(self, pos):
        """(start, end) of a Q-length-prefixed payload at pos."""
        start, end = self.span(pos, 8)
        return self.span(end, _Q.unpack_from(self.data, start)[0])

    def int_(self, pos):
        start, end = self.sized(pos)
        return int.from_bytes(self.mv[start:end], "little", signed=True), end

    def int64(self, pos):
        if pos + 8 > len(self.data):
            raise ValueError("message truncated")
        return _q.unpack_from(self.data, pos)[0], pos + 8

    def float_(self, pos):
        start, end = self.span(pos, 8)
        return _F.unpack_from(self.data, start)[0], end

    def complex_(self, pos):
        start, end = self.span(pos, 16)
        return complex(*_C.unpack_from(self.data, start)), end

    def str_(self, pos):
        start, end = self.sized(pos)
        return codecs.utf_8_decode(self.mv[start:end], "surrogatepass", True)[0], end

    def bytes_(self, pos):
        start, end = self.sized(pos)
        return self.data[start:end], end

    def ref(self, pos):
        name, end = self.str_(pos)
        if self.refs is None:
            raise ValueError("a reference where only plain data may come")
        try:
            return self.refs[name], end
        except KeyError:
            raise ValueError(f"unknown reference {name!r}") from None

    def numbers(self, pos, code):
        start, end = self.sized(pos)
        if (end - start) % 8:
            raise ValueError("packed numbers of a length that is not a multiple of 8")
        a = array.array(code)
        a.frombytes(self.mv[start:end])
        return _le(a).tolist(), end

    def mixed(self, pos, depth):
        start, end = self.sized(pos)
        n, rest = divmod(end - start, 9)
        if rest:
            raise ValueError("mixed numbers of a length that is not a multiple of 9")
        a = array.array("d")
        a.frombytes(self.mv[start + n : end])
        items = _le(a).tolist()
        try:
            for i in itertools.compress(range(n), self.mv[start : start + n]):
                items[i] = int(items[i])
        except OverflowError:  # an infinity marked as an int
            raise ValueError("mixed numbers with an int that is not finite") from None
        return items, end

    def int64s(self, pos, depth):
        return self.numbers(pos, "q")

    def float64s(self, pos, depth):
        return self.numbers(pos, "d")

    def json(self, pos):
        start, end = self.sized(pos)
        text = codecs.utf_8_decode(self.mv[start:end], "surrogatepass", True)[0]
        try:
            # With the interpreter's digit limit on, its C parser refuses long numbers before converting
            # them; without it, a hook bounds each integer token (a Python call per integer: slower).
            items = (_JSON_DEC if _int_json_safe() else _JSON_DEC_BOUNDED).decode(text)
        except RecursionError:  # the C scanner's own guard; the type checks below refuse nesting anyway
            raise ValueError("JSON items nest too deeply") from None
        if type(items) is not list:
            raise ValueError("JSON items are not an array")
        return items, end

    def json_flat(self, pos, depth):
        items, end = self.json(pos)
        if not set(map(type, items)) <= _JSON_SCALARS:
            raise ValueError("JSON items that are not scalars")
        return items, end

    def json_rows(self, pos, depth):
        if depth >= MAX_DEPTH:
            raise ValueError(f"containers nest deeper than {MAX_DEPTH}")
        rows, end = self.json(pos)
        if not set(map(type, rows)) <= {list}:
            raise ValueError("JSON rows that are not arrays")
        if not set(map(type, itertools.chain.from_iterable(rows))) <= _JSON_SCALARS:
            raise ValueError("JSON rows with items that are not scalars")
        if self.data[pos - 1] == ord("T"):
            rows = list(map(tuple, rows))
        return rows, end

    def dtype(self, pos):
        np = _numpy()
        start, end = self.span(pos, 1)
        start, end = self.span(end, self.data[start])
        code = self.data[start:end]
        if not _DTYPE.match(code):
            raise ValueError(f"numpy dtype {code[:20]!r} is not allowed")
        try:
            return np, np.dtype(code.decode("ascii")), end
        except TypeError:
            raise ValueError(f"numpy dtype {code!r} is not understood") from None

    def raw(self, pos, np, dt, count):
        """count items of dtype dt at pos, checked: bools are 0 or 1, characters are code points."""
        start, end = self.sized(pos)
        if end - start != count * dt.itemsize:
            raise ValueError("numpy data of the wrong length")
        flat = np.frombuffer(self.mv[start:end], dtype=dt)
        if dt.kind == "b":
            bad = (flat.view(np.uint8) > 1).any()
        elif dt.kind == "U":
            bad = (flat.view(dt.str[0] + "u4") > 0x10FFFF).any()
        else:
            bad = False
        if bad:
            raise ValueError(f"numpy data that is not valid {dt.str}")
        return flat, end

    def ndarray(self, pos):
        np, dt, pos = self.dtype(pos)
        start, pos = self.span(pos, 1)
        ndim = self.data[start]
        if ndim > _MAX_NDIM:
            raise ValueError(f"numpy array of {ndim} dimensions")
        start, pos = self.span(pos, 8 * ndim)
        shape = struct.unpack_from(f"<{ndim}Q", self.data, start)
        if max(shape, default=0) > sys.maxsize:
            raise ValueError("numpy shape out of range")
        count = 1
        for n in shape:
            count *= n
        flat, pos = self.raw(pos, np, dt, count)
        try:
            return flat.reshape(shape).copy(), pos
        except (ValueError, OverflowError):  # numpy's own bounds on an empty array's shape
            raise ValueError(f"numpy shape {shape} refused") from None

    def npscalar(self, pos):
        np, dt, pos = self.dtype(pos)
        flat, pos = self.raw(pos, np, dt, 1)
        return flat[0], pos


def _build(frame):
    tag, items, _, keys = frame
    if tag == _WRAP:
        build, base = _UNWRAP[keys]
        if type(items[0]) is not base:
            raise ValueError(f"a {build.__name__} must wrap a {base.__name__}")
        return build(items[0])
    if tag == ord("l"):
        return items
    if tag == ord("t"):
        return tuple(items)
    if tag == ord("d") and len(keys) != len(items):
        raise ValueError("dict with unequal numbers of keys and values")
    members = keys if tag == ord("d") else items
    try:
        if len(members) > _MAX_SAME_HASH and len(members) - len(set(map(hash, members))) > _MAX_SAME_HASH:
            raise ValueError(f"more than {_MAX_SAME_HASH} set items or dict keys share hashes")
        return dict(zip(keys, items)) if tag == ord("d") else _KINDS[tag](items)
    except TypeError:
        raise ValueError("unhashable set item or dict key") from None


_SCALARS = {
    ord("N"): lambda r, pos: (None, pos),
    ord("T"): lambda r, pos: (True, pos),
    ord("F"): lambda r, pos: (False, pos),
    ord("I"): _Reader.int64,
    ord("i"): _Reader.int_,
    ord("f"): _Reader.float_,
    ord("c"): _Reader.complex_,
    ord("s"): _Reader.str_,
    ord("y"): _Reader.bytes_,
    ord("a"): _Reader.ndarray,
    ord("g"): _Reader.npscalar,
    ord("r"): _Reader.ref,
}
_FORMS = {
    ord("q"): _Reader.int64s,
    ord("d"): _Reader.float64s,
    ord("m"): _Reader.mixed,
    ord("j"): _Reader.json_flat,
    ord("L"): _Reader.json_rows,
    ord("T"): _Reader.json_rows,
}


def _bounded_int(token: str) -> int:
    # Bounds the quadratic decimal conversion of each integer token when the interpreter's limit is off.
    if len(token) - token.startswith("-") > _MAX_INT_DIGITS:
        raise ValueError("integer of more than 4300 digits in JSON items")
    return int(token)


_JSON_DEC = json.JSONDecoder()
_JSON_DEC_BOUNDED = json.JSONDecoder(parse_int=_bounded_int)


def _numpy():
    try:
        import numpy
    except ImportError:
        raise ValueError("numpy data, and numpy is not installed here") from None
    return numpy


def read_exact(fd: int, size: int) -> bytes | None:
    """`size` bytes from a pipe or socket `fd`, or None at its end (both sides of the jail read messages so)."""
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
