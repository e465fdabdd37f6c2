"""The quickstart's numbers and page, from synthetic evaluations (the real run: test_quickstart.py)."""

import json

from moecoder.pipeline.quickstart import headline, implements, model_numbers, parses, repeated_character
from moecoder.report.quickstart import write_quickstart_report

SCORE = {"value": 0.0, "ci95": [0.0, 0.0]}


def test_repeated_character_runs_are_caught_and_code_is_not():
    for degenerate in ("`" * 90 + "\n" + "`" * 13 + "\n", "\n\n\n\n", "    \n    \n", "))))"):
        assert repeated_character(degenerate), degenerate
    for fine in ("\n    return x\n", "    )\n", "", "`", "\n    pass\n", "```python\ndef f():\n```"):
        assert not repeated_character(fine), fine


def test_parse_and_body():
    prompt = 'def f(x):\n    """Doc."""\n'
    assert parses(prompt) and not implements(prompt, "f")
    assert implements(prompt + "    return x\n", "f") and not implements(prompt + "    pass\n", "f")
    assert not implements(prompt + '    """\n    """\n    ...\n', "f")  # strings repeated are no body
    assert not parses(prompt + "````\n") and not parses("def g(a, a):\n    return a\n")


def _numbers(mode, rows):
    return model_numbers({"rows": rows, "mode": mode, "summary": {"pass_at_k": {"pass@1": SCORE}}},
                         heldout_loss=3.0, heldout_what="held-out files")


def test_model_numbers_count_parsing_bodies_and_repeated_characters():
    base = _numbers("completion", [
        {"task_id": "HumanEval/0", "completion": "    return False\n", "raw": "\n    return False\n"},
        {"task_id": "HumanEval/1", "completion": "\n\n\n", "raw": "\n\n\n\n"},
    ])
    assert base["parse_share"] == 1.0 and base["implemented_share"] == 0.5 and base["repeated_character_share"] == 0.5
    chat = _numbers("chat", [{"task_id": "HumanEval/0", "solution": "", "raw": "`" * 40}])
    assert chat["parse_share"] == 0.0 and chat["repeated_character_share"] == 1.0  # nothing extracted: no parse


def test_headline_says_what_was_and_was_not_learned(tmp_path):
    base = _numbers("completion", [{"task_id": "HumanEval/0", "completion": "    return False\n", "raw": "x = 1\n"}])
    instruct = _numbers("chat", [{"task_id": "HumanEval/0", "solution": "def f():\n    return 1\n", "raw": "ok"}])
    infill = {"n": 4, "pass@1": {"value": 0.5, "ci95": [0.0, 1.0]}, "exact_match": {"value": 0.25},
              "baseline_pass@1": {"value": 0.25, "ci95": [0.0, 0.75]}, "baseline_exact_match": {"value": 0.25},
              "baseline_answer": "return False", "difference": 0.25, "test": "mcnemar-exact", "p_value": 1.0,
              "repeated_character_share": 0.0}
    base["infilling"] = infill
    models = {"base": base, "instruct": instruct}
    said = headline(models, {"first_loss": 8.4, "heldout_loss": 3.1})
    assert "8.40" in said["learned"] and "3.10" in said["learned"] and "better than a constant answer" in said["learned"]
    assert "not significant" in said["learned"] and "does not solve HumanEval" in said["did not learn"]
    worse = headline({**models, "base": {**base, "infilling": {**infill, "pass@1": {"value": 0.1}}}},
                     {"first_loss": 8.4, "heldout_loss": 3.1})
    assert "nor does it beat a constant answer" in worse["did not learn"]

    (tmp_path / "quickstart.json").write_text(json.dumps({
        "minutes": 3, "headline": said, "models": models, "training": {"logs": {}, "metrics": {"corpus": "x"}},
        "examples": [{"task_id": "HumanEval/0", "base (completion)": "<b>raw</b>"}],
        "runs": {"base": str(tmp_path / "eval" / "base")}}))
    page = write_quickstart_report(tmp_path).read_text()
    assert 'id="headline-0"' in page and 'id="models"' in page and 'id="infilling"' in page
    assert "mcnemar-exact" in page and "DeepSeek-Coder-Base 1.3B" in page and "&lt;b&gt;raw&lt;/b&gt;" in page
