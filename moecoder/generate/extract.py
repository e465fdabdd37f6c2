"""The program in a chat reply: fenced blocks found, reasoning drafts dropped, and only what the entry point
needs kept (evalplus's sanitizer is the reference behaviour: a dependency walk from the entry point).

The rules, each with its case in tests/generate/extraction_corpus.py:
- Line ends: CRLF and CR read as LF.
- Reasoning: <think>...</think> is dropped, so is text before a lone </think> (the opening tag was in the
  prompt); a reply still inside an unclosed <think> has given no answer yet.
- Blocks: ``` or ~~~ fences; a block tagged python/py/python3/py3 or untagged is Python, other tags are other
  languages. An untagged fence with no block open, after text that is Python, closes that text (the reply
  continued the prompt's open block). A block indented in a list item is dedented; one the token limit cut
  off runs to the end of the reply.
- The program: every Python block in order, as if pasted into one file; with no block that defines the entry
  point, the unfenced text from its first code line. Each block is cut to its longest prefix that parses.
- Dependencies: the entry point's definition, and transitively the top-level statements binding a name it
  uses (imports, constants, helpers, classes, decorators, defaults, base classes). Names local to a function
  are not dependencies (scopes from `symtable`). Everything else goes: prose, usage examples, prints, asserts,
  driver code reading input(), `if __name__ == "__main__":` blocks.
- Redefinition: the last def/class of a name is the one Python calls; earlier ones go, with what only they
  needed. A stub (docstring, pass, ... or raise NotImplementedError only) never replaces a full definition, and
  an import never replaces a definition (a test block's `from solution import f`).
- No definition of the entry point anywhere: every statement that binds a name is kept (the harness reports
  the missing function); no Python at all: the empty string.
"""

from __future__ import annotations

import ast
import re
import symtable
import textwrap
from dataclasses import dataclass, field

PYTHON_TAGS = {"python", "py", "python3", "py3"}
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<tag>[^\s`]*)[^`\n]*$")
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)
_CODE_START = re.compile(r"^(?:import |from |def |async def |class |@)", re.MULTILINE)
_STAR = "*"


def strip_think(reply: str) -> str:
    """The reply without reasoning drafts: <think>...</think> sections, a draft whose opening tag was in the
    prompt (text before a lone </think>), and an unfinished draft (a lone <think> to the end)."""
    reply = _THINK.sub("", reply)
    if "</think>" in reply:
        reply = reply.rsplit("</think>", 1)[1]
    return reply.split("<think>", 1)[0]


# --- blocks ------------------------------------------------------------------------------------------------

@dataclass
class Block:
    tag: str  # lower-case language tag, "" when untagged
    code: str


def _looks_like_code(text: str) -> str | None:
    """`text` from its first code line, when all of that parses as Python; else None."""
    start = _CODE_START.search(text)
    if start is None:
        return None
    code = text[start.start():]
    try:
        ast.parse(code)
    except SyntaxError:
        return None
    return code


def split_fences(reply: str) -> tuple[list[Block], list[str]]:
    """The fenced blocks of a reply, and the text between them (prose, or code without fences)."""
    blocks, outside, current = [], [], []
    opener, open_tag = None, ""  # the open block's fence (``` or ~~~, 3 or more) and language tag
    for line in reply.split("\n"):
        match = _FENCE.match(line)
        if opener is None:
            if match is None:
                current.append(line)
                continue
            text, tag = "\n".join(current), match["tag"].lower()
            lone_close = not tag and _looks_like_code(text)
            if lone_close:
                blocks.append(Block("", lone_close))
            else:
                outside.append(text)
                opener, open_tag = match["fence"], tag
            current = []
        elif match and not match["tag"] and match["fence"][0] == opener[0] and len(match["fence"]) >= len(opener):
            blocks.append(Block(open_tag, textwrap.dedent("\n".join(current))))
            opener, current = None, []
        else:
            current.append(line)
    if opener is not None:  # cut off by the token limit: the block runs to the end
        blocks.append(Block(open_tag, textwrap.dedent("\n".join(current))))
    else:
        outside.append("\n".join(current))
    return blocks, outside


# --- statements --------------------------------------------------------------------------------------------

@dataclass(eq=False)
class Statement:
    node: ast.stmt
    first: int  # first line (0-based, decorators and comments right above included)
    last: int  # last line, inclusive
    binds: set[str] = field(default_factory=set)
    uses: set[str] = field(default_factory=set)

    @property
    def is_definition(self) -> bool:
        return isinstance(self.node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))

    @property
    def is_import(self) -> bool:
        return isinstance(self.node, (ast.Import, ast.ImportFrom))


def _parse_prefix(code: str) -> tuple[ast.Module, str]:
    """The longest prefix of `code` (whole lines) that compiles: a block cut off by the token limit still
    yields its finished functions. An empty module when no line parses. Besides parsing, the symbol table
    must build: ast.parse accepts what Python then refuses to compile (a duplicate argument name)."""
    lines = code.split("\n")
    end = len(lines)
    while end > 0:
        text = "\n".join(lines[:end])
        try:
            tree = ast.parse(text)
            symtable.symtable(text, "<reply>", "exec")
            return tree, text
        except SyntaxError as exc:  # no prefix longer than the failing line parses: skip straight to it
            end = min(end - 1, exc.lineno or end)
    return ast.Module(body=[], type_ignores=[]), ""


def _is_main_guard(node: ast.stmt) -> bool:
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare) or len(node.test.comparators) != 1:
        return False
    sides = [node.test.left, node.test.comparators[0]]
    return (any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides)
            and any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides))


def is_stub(node: ast.stmt) -> bool:
    """A def whose body is only a docstring, pass, ... or raise NotImplementedError (a restated signature)."""
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return False
    for statement in node.body:
        if isinstance(statement, ast.Pass) or (isinstance(statement, ast.Expr)
                                               and isinstance(statement.value, ast.Constant)):
            continue
        if isinstance(statement, ast.Raise) and "NotImplementedError" in ast.unparse(statement):
            continue
        return False
    return True


def _evaluated_at_definition(node: ast.stmt) -> list[ast.AST]:
    """The parts of a def or class evaluated where it is defined: decorators, defaults, annotations, bases."""
    parts = list(node.decorator_list)
    if isinstance(node, ast.ClassDef):
        return parts + node.bases + [k.value for k in node.keywords]
    args = node.args
    every = args.posonlyargs + args.args + args.kwonlyargs + [a for a in (args.vararg, args.kwarg) if a]
    return (parts + args.defaults + [d for d in args.kw_defaults if d is not None]
            + [a.annotation for a in every if a.annotation] + ([node.returns] if node.returns else []))


def _scope_globals(table: symtable.SymbolTable) -> set[str]:
    """Module-level names a function or class body reads, nested scopes included."""
    names = {s.get_name() for s in table.get_symbols() if s.is_global() and s.is_referenced()}
    for child in table.get_children():
        names |= _scope_globals(child)
    return names


def _names(node: ast.AST, tables: dict[tuple[str, int], symtable.SymbolTable]) -> tuple[set[str], set[str]]:
    """(names bound at module level, names read) by a top-level statement; function and class bodies are
    read through their symbol tables, so that their local names are not taken for module names."""
    binds, uses = set(), set()

    def visit(n: ast.AST) -> None:
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            binds.add(n.name)
            for part in _evaluated_at_definition(n):
                visit(part)
            table = tables.get((n.name, n.lineno))
            if table is not None:
                uses.update(_scope_globals(table))
            else:  # no table (should not happen): every name inside counts
                uses.update(x.id for x in ast.walk(n) if isinstance(x, ast.Name))
            return
        if isinstance(n, (ast.Import, ast.ImportFrom)):
            binds.update(_STAR if a.name == "*" else (a.asname or a.name.split(".")[0]) for a in n.names)
        elif isinstance(n, ast.Name):
            (binds if isinstance(n.ctx, (ast.Store, ast.Del)) else uses).add(n.id)
        elif isinstance(n, (ast.Attribute, ast.Subscript)) and isinstance(n.ctx, ast.Store):
            root = n.value
            while isinstance(root, (ast.Attribute, ast.Subscript)):
                root = root.value
            if isinstance(root, ast.Name):  # CACHE[0] = 1 adds to CACHE's definition
                binds.add(root.id)
        for child in ast.iter_child_nodes(n):
            visit(child)

    visit(node)
    return binds, uses


def _statements(code: str) -> tuple[list[Statement], list[str]]:
    """The top-level statements of a block's longest parsable prefix, and its lines."""
    module, text = _parse_prefix(code)
    lines = text.split("\n")
    if not module.body:
        return [], lines
    tables = {}
    for child in symtable.symtable(text, "<reply>", "exec").get_children():
        tables[(child.get_name(), child.get_lineno())] = child
    statements = []
    for node in module.body:
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1
        while first > 0 and lines[first - 1].lstrip().startswith("#"):  # comments right above go with it
            first -= 1
        binds, uses = _names(node, tables) if not _is_main_guard(node) else (set(), set())
        statements.append(Statement(node, first, node.end_lineno - 1, binds, uses))
    return statements, lines


# --- the dependency walk -----------------------------------------------------------------------------------

def _providers(statements: list[Statement]) -> dict[str, list[Statement]]:
    """name -> the statements that give it its value: its last full def/class and what follows it (a
    decorator applied by assignment, attributes set on it), or every binding when it has no def/class."""
    binding: dict[str, list[Statement]] = {}
    for statement in statements:
        for name in statement.binds:
            binding.setdefault(name, []).append(statement)
    providers = {}
    for name, group in binding.items():
        defs = [s for s in group if s.is_definition and name == s.node.name]
        full = [s for s in defs if not is_stub(s.node)] or defs
        if not full:
            providers[name] = group
            continue
        chosen = full[-1]
        after = group[group.index(chosen) + 1:]
        providers[name] = [chosen] + [s for s in after if not s.is_definition and not s.is_import]
    return providers


def needed(statements: list[Statement], entry_point: str) -> set[Statement]:
    """The statements the entry point depends on, transitively; every binding statement when nothing
    defines it."""
    providers = _providers(statements)
    if entry_point not in providers:
        return {s for s in statements if s.binds}
    kept, queue = set(), [entry_point]
    while queue:
        for statement in providers.get(queue.pop(), []):
            if statement not in kept:
                kept.add(statement)
                queue.extend(statement.uses)
    kept.update(s for s in statements if _STAR in s.binds or isinstance(s.node, ast.ImportFrom)
                and s.node.module == "__future__")
    return kept


def _render(lines: list[str], statements: list[Statement], kept: set[Statement]) -> str:
    """The block's lines less the dropped statements (comments above them included), blank runs kept short."""
    dropped = set()
    for statement in statements:
        if statement not in kept:
            dropped.update(range(statement.first, statement.last + 1))
    out = [line for i, line in enumerate(lines) if i not in dropped]
    text = re.sub(r"\n{4,}", "\n\n\n", "\n".join(out)).strip("\n")
    return text + "\n" if text else ""


def extract_code(reply: str, entry_point: str) -> str:
    """The program in an instruct model's reply (the rules are this module's docstring): its Python blocks
    taken as one file, reduced to what `entry_point` depends on. "" when the reply holds no Python."""
    reply = strip_think(reply.replace("\r\n", "\n").replace("\r", "\n"))
    blocks, outside = split_fences(reply)
    sources = [b.code for b in blocks if b.tag in PYTHON_TAGS or not b.tag]
    parsed = [_statements(code) for code in sources]
    if not any(entry_point in s.binds for statements, _ in parsed for s in statements):
        unfenced = [text[m.start():] for text in outside if (m := _CODE_START.search(text))]
        parsed += [_statements(code) for code in unfenced]
    everything = [s for statements, _ in parsed for s in statements]
    kept = needed(everything, entry_point)
    parts = [_render(lines, statements, kept) for statements, lines in parsed]
    return "\n\n".join(part for part in parts if part)
