"""Showing text that programs under test wrote: exception messages and type names, task ids, completions.

Such text is data. It must appear as written and never be read as rich markup (`[bold]`, `[/]`),
emoji codes (`:smile:`), matplotlib math (`$...$`), HTML, or terminal control sequences (`ESC [31m`,
an OSC that retitles the window). HTML escaping lives with the page (moecoder.report.html) and math
text is switched off where plots are drawn; this module covers terminals and what every renderer shares.
"""

from __future__ import annotations

# Characters a terminal or a page acts on instead of showing: C0 and C1 controls, DEL, and the
# bidirectional overrides and separators that reorder or break the text around them.
_INVISIBLE = (*range(0x20), 0x7F, *range(0x80, 0xA0), 0x061C, 0x200E, 0x200F, 0x2028, 0x2029,
              *range(0x202A, 0x202F), *range(0x2066, 0x206A))
_NAMED = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
_ESCAPES = {c: _NAMED.get(c, f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in _INVISIBLE}


def visible(text: object, limit: int | None = None) -> str:
    """`text` with every control or bidi character written as a Python escape (ESC -> `\\x1b`,
    newline -> `\\n`), cut to `limit` characters (the last one then `…`)."""
    shown = str(text).translate(_ESCAPES)
    if limit is not None and len(shown) > limit:
        shown = shown[: limit - 1] + "…"
    return shown


def console(stderr: bool = True):
    """A rich Console that prints strings as they are: no markup, no emoji codes, no highlighting.

    Strings still need `visible()` where they may hold control characters: rich passes ESC through.
    Style trusted text with `rich.text.Text` instead of markup.
    """
    from rich.console import Console

    return Console(stderr=stderr, markup=False, emoji=False, highlight=False)
