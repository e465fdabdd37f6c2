"""Inference never imports training code: generation and serving reach the tokenizer through moecoder.text."""

import subprocess
import sys

INFERENCE = ["moecoder.text", "moecoder.generate", "moecoder.generate.local", "moecoder.generate.native",
             "moecoder.generate.hf", "moecoder.generate.remote", "moecoder.serve.app", "moecoder.serve.engine"]


def test_generation_and_serving_do_not_import_training_code():
    probe = (f"import importlib, sys\nfor name in {INFERENCE!r}: importlib.import_module(name)\n"
             "print(sorted(m for m in sys.modules if m.startswith('moecoder.train')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
