"""Replies as instruct models write them, each with the rule it tests, the program extract_code must return,
and calls the program must answer. Shapes taken from bug reports against evalplus, lm-evaluation-harness and
DeepSeek-Coder's own evaluation, and from DeepSeek-Coder/R1-style replies to HumanEval prompts.
"""

from dataclasses import dataclass, field


@dataclass
class Case:
    name: str
    rule: str
    reply: str
    expected: str
    entry_point: str = "has_close_elements"
    calls: list = field(default_factory=list)  # (args, result) pairs the extracted entry point must satisfy


HAS_CLOSE = (
    "def has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
    "    for idx, elem in enumerate(numbers):\n"
    "        for idx2, elem2 in enumerate(numbers):\n"
    "            if idx != idx2 and abs(elem - elem2) < threshold:\n"
    "                return True\n"
    "    return False\n")
TYPED = "from typing import List\n\n\n" + HAS_CLOSE
CLOSE_CALLS = [(([1.0, 2.0, 3.9, 4.0], 0.3), True), (([1.0, 2.0, 3.0], 0.5), False)]
WRONG = "def has_close_elements(numbers, threshold):\n    return False\n"


def answers_has_close(name: str, rule: str, reply: str) -> Case:
    """A case whose reply holds the typed has_close_elements: the program is TYPED, checked on CLOSE_CALLS."""
    return Case(name, rule, reply, TYPED, calls=CLOSE_CALLS)


CASES = [
    answers_has_close(
        "fenced block with prose around it",
        "A python-tagged block is the program; prose outside the fences is not code.",
        "Here is the completed function:\n\n```python\n" + TYPED + "```\n\n"
        "The function compares every pair of numbers and returns True as soon as two are closer than the "
        "threshold.\n"),

    answers_has_close(
        "lone closing fence",
        "An untagged fence with no block open, after text that is Python, closes that text: the reply went on "
        "from the prompt's open ```python block (HumanEval/0 scored NameError when this extracted nothing).",
        TYPED + "```\n\nThis implementation checks each pair of elements."),

    answers_has_close(
        "driver code reading input",
        "Top-level statements the entry point does not depend on are dropped: here the driver lines that read "
        "stdin and would end the program with EOFError.",
        "```python\n" + TYPED + "\n\nvalues = list(map(float, input().split()))\nlimit = float(input())\n"
        "print(has_close_elements(values, limit))\n```"),

    Case(
        "a local name that a driver line also binds",
        "Names local to a function are not dependencies: `values` inside the function is its own, so the "
        "top-level `values = ...input()` line still goes.",
        "```python\ndef has_close_elements(numbers, threshold):\n    values = sorted(numbers)\n"
        "    return any(b - a < threshold for a, b in zip(values, values[1:]))\n\n\n"
        "values = [float(x) for x in input().split()]\nprint(has_close_elements(values, 0.5))\n```\n",
        "def has_close_elements(numbers, threshold):\n    values = sorted(numbers)\n"
        "    return any(b - a < threshold for a, b in zip(values, values[1:]))\n",
        calls=CLOSE_CALLS),

    Case(
        "helpers, constants, classes and imports it depends on",
        "What the entry point uses is kept, transitively: imports (also through a decorator), constants (also "
        "through a default argument and a class body), helpers, classes. Unused helpers, usage examples, "
        "asserts, loops and the `if __name__ == \"__main__\":` block go, with the comment right above them.",
        "```python\nimport functools\nimport sys\n\nLIMIT = 10\nSTEP = 1\n\n\n"
        "@functools.lru_cache(maxsize=None)\ndef fib(k):\n    # memoised helper\n"
        "    return k if k < 2 else fib(k - 1) + fib(k - 2)\n\n\n"
        "class Acc:\n    start = STEP - 1\n\n    def add(self, x):\n        return x\n\n\n"
        "def unused_helper():\n    return sys.argv\n\n\n"
        "def fib_sum(n, limit=LIMIT):\n    acc = Acc()\n"
        "    return acc.start + sum(acc.add(fib(i)) for i in range(min(n, limit)))\n\n\n"
        "# Example usage\nresult = fib_sum(5)\nassert fib_sum(3) == 2\nfor n in range(3):\n    print(fib_sum(n))\n\n"
        "if __name__ == \"__main__\":\n    print(result)\n```",
        "import functools\n\nLIMIT = 10\nSTEP = 1\n\n\n"
        "@functools.lru_cache(maxsize=None)\ndef fib(k):\n    # memoised helper\n"
        "    return k if k < 2 else fib(k - 1) + fib(k - 2)\n\n\n"
        "class Acc:\n    start = STEP - 1\n\n    def add(self, x):\n        return x\n\n\n"
        "def fib_sum(n, limit=LIMIT):\n    acc = Acc()\n"
        "    return acc.start + sum(acc.add(fib(i)) for i in range(min(n, limit)))\n",
        entry_point="fib_sum", calls=[((5,), 7), ((20,), 88)]),

    answers_has_close(
        "several fences",
        "Every Python or untagged block, in order, is one program; shell blocks are not Python, and usage or "
        "output blocks bind nothing the entry point needs.",
        "First, no dependencies are needed:\n```bash\npip install --upgrade pip\n```\n"
        "The solution:\n```python\n" + TYPED + "```\nUsage:\n```python\n"
        "print(has_close_elements([1.0, 2.8, 3.0], 0.3))\n```\nOutput:\n```\nTrue\n```\n"),

    answers_has_close(
        "a language tag that is not python",
        "Blocks tagged with another language are not Python, even when they define the entry point.",
        "In JavaScript:\n```javascript\nfunction has_close_elements(numbers, threshold) {\n  return false;\n}\n```\n"
        "And in Python:\n```Python\n" + TYPED + "```\nIn C++:\n```cpp\n"
        "bool has_close_elements(std::vector<float> numbers, float threshold);\n```\n"),

    Case(
        "prose between blocks",
        "Blocks with prose between them are one program: an import in an earlier block serves a function in "
        "a later one.",
        "We need `math` for the distance:\n\n```python\nimport math\n```\n\nNow compare every pair; "
        "`math.isclose` is not what we want here because of the strict bound:\n\n```python\n"
        "def has_close_elements(numbers, threshold):\n    return any(math.fabs(a - b) < threshold\n"
        "               for i, a in enumerate(numbers) for b in numbers[i + 1:])\n```\n",
        "import math\n\n\ndef has_close_elements(numbers, threshold):\n    return any(math.fabs(a - b) < threshold\n"
        "               for i, a in enumerate(numbers) for b in numbers[i + 1:])\n",
        calls=CLOSE_CALLS),

    Case(
        "the function defined twice in one block",
        "The last definition is the one Python calls: the earlier one goes, with the helper only it needed.",
        "```python\ndef _pairs(numbers):\n    return [(a, b) for a in numbers for b in numbers]\n\n\n"
        "def has_close_elements(numbers, threshold):\n    # first attempt: compares each number with itself\n"
        "    return any(abs(a - b) < threshold for a, b in _pairs(numbers))\n\n\n"
        "def has_close_elements(numbers, threshold):\n    ordered = sorted(numbers)\n"
        "    return any(b - a < threshold for a, b in zip(ordered, ordered[1:]))\n```",
        "def has_close_elements(numbers, threshold):\n    ordered = sorted(numbers)\n"
        "    return any(b - a < threshold for a, b in zip(ordered, ordered[1:]))\n",
        calls=CLOSE_CALLS),

    answers_has_close(
        "a corrected version in a later block, then a restated signature",
        "Across blocks the last full definition wins; a stub (only a docstring, pass, ... or raise "
        "NotImplementedError) never replaces a full definition.",
        "My first try:\n```python\n" + WRONG + "```\nThat always answers False. Fixed:\n```python\n" + TYPED
        + "```\nThe signature stays as given:\n```python\n"
        "def has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
        "    \"\"\" Check if in given list of numbers, are any two numbers closer to each other than\n"
        "    given threshold.\n    \"\"\"\n```\n"),

    answers_has_close(
        "a test block importing the solution",
        "An import never replaces a definition of the same name: a test file's `from solution import ...` "
        "goes with the rest of the tests.",
        "```python\n" + TYPED + "```\nTests:\n```python\nimport unittest\n"
        "from solution import has_close_elements\n\n\nclass TestClose(unittest.TestCase):\n"
        "    def test_close(self):\n        self.assertTrue(has_close_elements([1.0, 1.1], 0.2))\n\n\n"
        "if __name__ == '__main__':\n    unittest.main()\n```\n"),

    answers_has_close(
        "indentation inside a list",
        "A block indented in a markdown list item is dedented.",
        "Steps:\n\n1. Sort the numbers.\n2. Compare neighbours:\n\n   ```python\n"
        + "".join(f"   {line}\n" if line else "\n" for line in TYPED.splitlines()) + "   ```\n\n3. Done.\n"),

    answers_has_close(
        "a reply that is only code",
        "With no fences the reply is code from its first code line, up to where it stops being Python.",
        TYPED + "\n\nprint(has_close_elements([1.0, 2.0], 0.5))\n"),

    answers_has_close(
        "code without fences after a sentence and before an explanation",
        "Unfenced code is taken from its first code line to the last line that still parses.",
        "Sure! Here it is:\n" + TYPED + "\nThis checks every pair, so it runs in O(n^2).\n"),

    answers_has_close(
        "a <think> draft with its closing tag",
        "Reasoning inside <think>...</think> is dropped, code in it included.",
        "<think>\nThe user wants has_close_elements. A first try:\n```python\n" + WRONG + "```\n"
        "That is wrong, compare pairs.\n</think>\n\nHere is the solution:\n```python\n" + TYPED + "```\n"),

    answers_has_close(
        "a <think> draft whose opening tag was in the prompt",
        "Text before a lone </think> is reasoning (templates such as DeepSeek-R1's open <think> themselves).",
        "Okay, let me write a draft:\n```python\n" + WRONG + "```\nNo, pairs must be compared.\n</think>\n\n"
        "```python\n" + TYPED + "```"),

    Case(
        "a <think> draft cut off before its closing tag",
        "A reply still inside an unclosed <think> has given no answer: nothing is extracted, however good "
        "the draft.",
        "<think>\nLet me think about pairs.\n```python\n" + TYPED + "```\nNow double-check the edge cases",
        ""),

    answers_has_close(
        "an answer followed by an unfinished <think>",
        "Text after a lone <think> is reasoning; the answer before it stands.",
        "```python\n" + TYPED + "```\n<think>Maybe sorting first would be faster"),

    answers_has_close(
        "CRLF line ends",
        "CRLF (and CR) line ends are read as LF; the program has LF line ends.",
        ("Here you go:\r\n```python\r\n" + TYPED + "\r\n\r\nprint(has_close_elements([1.0], 1.0))\r\n```\r\n")
        .replace("\n", "\r\n").replace("\r\r\n", "\r\n")),

    answers_has_close(
        "a reply cut off by the token limit",
        "A block the token limit cut off runs to the end of the reply and keeps its finished statements.",
        "```python\n" + TYPED + "\n\ndef faster(numbers, threshold):\n    ordered = sorted(numbers)\n    if len("),

    Case(
        "an optional import in try/except",
        "A compound statement that binds a needed name (an import with a fallback) is kept whole.",
        "```python\ntry:\n    from math import dist\nexcept ImportError:\n    def dist(a, b):\n        return abs(a - b)\n\n\n"
        "import os\n\n\ndef has_close_elements(numbers, threshold):\n"
        "    return any(dist([a], [b]) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n```\n",
        "try:\n    from math import dist\nexcept ImportError:\n    def dist(a, b):\n        return abs(a - b)\n\n\n"
        "def has_close_elements(numbers, threshold):\n"
        "    return any(dist([a], [b]) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n",
        calls=CLOSE_CALLS),

    answers_has_close(
        "tilde fences",
        "~~~ fences are fences too.",
        "~~~python\n" + TYPED + "~~~\n"),

    Case(
        "no definition of the entry point",
        "With no definition of the entry point, every statement that binds a name is kept and the rest goes "
        "(the harness then reports the missing function).",
        "```python\nimport math\n\n\ndef close(numbers, threshold):\n    return False\n\n\nprint(close([], 1))\n```",
        "import math\n\n\ndef close(numbers, threshold):\n    return False\n"),

    Case(
        "no Python at all",
        "A reply with no Python gives the empty program.",
        "I am sorry, but I cannot help with that request.",
        ""),
]
