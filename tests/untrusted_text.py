"""Text a program under test controls (exception messages and type names, task ids) crafted to be
misread by a renderer: rich markup, matplotlib math, HTML, terminal escapes, format strings, emoji
codes, bidirectional overrides, bulk. Renderers must show each as written."""

HOSTILE = (
    "$\\foo$",
    "[/]",
    "[bold]x[/bold]",
    "<script>alert(1)</script>",
    '<img src=x onerror="window.pwned=1">',
    "\x1b[31mred\x1b]0;retitled\x07",
    "%s %d %(x)s",
    "{} {0} {x.y}",
    ":thumbs_up:",
    "abc\u202edcba",
    "L" * 20_000,
)
