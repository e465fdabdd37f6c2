"""native: and hf: backends on a tiny trained moecoder checkpoint with the training helper's tokenizer."""

import json
import shutil

import pytest

from moecoder.errors import UserError
from moecoder.generate import COMPLETION_STOP, SamplingParams, extract_code, make_backend
from moecoder.text import render_chat

from tiny_model import CHAT as ADD


@pytest.fixture(scope="module")
def native(tiny_model):
    return make_backend(f"native:{tiny_model}")


def test_completion_mode_continues_the_prompt_and_stops_at_the_next_top_level_statement(native):
    params = SamplingParams(max_new_tokens=40, stop=COMPLETION_STOP)
    assert native.complete(["def add(a, b):"], params) == [["\n    return a + b\n\n"]]
    unstopped = native.complete(["def add(a, b):"], SamplingParams(max_new_tokens=12))[0][0]
    assert unstopped.startswith("\n    return a + b\n\n\ndef sub")


def test_chat_mode_uses_the_template_and_ends_at_end_of_turn(native):
    reply = native.chat([ADD], SamplingParams(max_new_tokens=60))[0][0]
    assert reply == "Sure:\n```python\ndef add(a, b):\n    return a + b\n```\n"  # nothing after <|EOT|>
    namespace = {}
    exec(extract_code(reply, "add"), namespace)
    assert namespace["add"](2, 3) == 5


def test_left_padded_batches_give_what_each_prompt_gives_alone(tiny_model, native):
    prompts = ["def add(a, b):", "def", "print(add(1,", "def sub(a, b):\n    return"]
    params = SamplingParams(max_new_tokens=10)
    alone = make_backend(f"native:{tiny_model}", batch_size=1).complete(prompts, params)
    assert native.complete(prompts, params) == alone


def test_n_samples_seeds_and_progress_callbacks(native):
    done = []
    params = SamplingParams(n=4, temperature=1.5, max_new_tokens=8, seed=7)
    first = native.complete(["def", "print"], params, on_result=lambda i, texts: done.append((i, len(texts))))
    assert sorted(done) == [(0, 4), (1, 4)]
    assert native.complete(["def", "print"], params) == first  # same seed, same samples
    assert len(set(first[0] + first[1])) > 1  # sampling, not greedy copies
    greedy = native.complete(["def"], SamplingParams(n=3, max_new_tokens=8))[0]
    assert len(greedy) == 3 and len(set(greedy)) == 1


def test_describe_records_weights_hash_and_template(tiny_model, native):
    described = native.describe()
    assert described["spec"] == f"native:{tiny_model}" and described["revision"].startswith("sha256:")
    assert described["template"].startswith("model chat_template sha256:")


def test_models_without_a_chat_template_get_deepseek_coders(tiny_model, tmp_path):
    copy = shutil.copytree(tiny_model, tmp_path / "no-template")
    config = json.loads((copy / "tokenizer_config.json").read_text())
    del config["chat_template"]
    (copy / "tokenizer_config.json").write_text(json.dumps(config))
    backend = make_backend(f"native:{copy}")
    assert backend.describe()["template"] == "deepseek-coder-instruct (built in)"
    assert backend.chat_prompt(ADD) == render_chat(ADD, add_generation_prompt=True, bos_token=config["bos_token"])


def test_hf_backend_on_the_same_weights_gives_the_same_greedy_output(tiny_model, native):
    pytest.importorskip("transformers")
    hf = make_backend(f"hf:{tiny_model}", device="cpu")
    prompts = ["def add(a, b):", "print(add(1,", "def"]
    params = SamplingParams(max_new_tokens=12, stop=COMPLETION_STOP)
    assert hf.complete(prompts, params) == native.complete(prompts, params)
    assert hf.chat([ADD], SamplingParams(max_new_tokens=60)) == native.chat([ADD], SamplingParams(max_new_tokens=60))
    blocked = SamplingParams(max_new_tokens=24, no_repeat_ngram=2)
    assert hf.complete(prompts, blocked) == native.complete(prompts, blocked)
    assert hf.describe()["revision"] == native.describe()["revision"]


def test_bad_specs_and_directories_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="must be native:PATH"):
        make_backend("gpt-4")
    with pytest.raises(UserError, match="unknown backend"):
        make_backend("vllm:foo")
    with pytest.raises(UserError, match="--base-url applies to openai"):
        make_backend("native:/x", base_url="http://127.0.0.1:1/v1")
    with pytest.raises(UserError, match="no config.json"):
        make_backend(f"native:{tmp_path}")


def test_infilling_builds_deepseek_coders_psm_prompt(native):
    from moecoder.text import FIM_BEGIN, FIM_END, FIM_HOLE

    ids = native.infill_ids("def add(a, b):\n", "\n\nprint(add(1, 2))\n")
    vocab = native.vocab()
    assert ids[:2] == [vocab[native.bos_token], vocab[FIM_BEGIN]] and ids[-1] == vocab[FIM_END]
    assert ids.count(vocab[FIM_HOLE]) == 1
    middles = native.infill([("def add(a, b):\n", "\n"), ("x = ", "\n")], SamplingParams(max_new_tokens=6, stop=("\n",)))
    assert [len(m) for m in middles] == [1, 1] and all("\n" not in m[0] for m in middles)


def test_no_repeat_ngram_forbids_repeating_generated_ngrams(native):
    from moecoder.generate.local import repeated_ngram_bans

    assert repeated_ngram_bans([[5, 6, 5], [1, 2, 3]], 2) == [[6], []]  # after 5: 6 would repeat "5 6"
    assert repeated_ngram_bans([[7, 7, 7]], 3) == [[7]] and repeated_ngram_bans([[7]], 2) == [[]]
    looping = native.complete(["print(add(1,"], SamplingParams(max_new_tokens=30))[0][0]
    ids = native.encode(native.complete(["print(add(1,"], SamplingParams(max_new_tokens=30, no_repeat_ngram=2))[0][0],
                        add_special_tokens=False)
    assert len(set(zip(ids, ids[1:]))) == len(ids) - 1  # no bigram twice in what was generated
    with pytest.raises(UserError, match="at least 2"):
        SamplingParams(no_repeat_ngram=1)
    assert looping  # plain greedy decoding still runs


def test_healing_the_verbatim_prompt_continues_it_from_a_natural_token(tiny_model, native):
    """"def add(a, b):\\n" ends on a lone newline; the trained text has "\\n" merged with the indentation."""
    prompt = "def add(a, b):\n"
    healed = native.complete([prompt], SamplingParams(max_new_tokens=8, stop=COMPLETION_STOP, heal=True))[0][0]
    assert prompt + healed == "def add(a, b):\n    return a + b\n\n"
    hf = make_backend(f"hf:{tiny_model}", device="cpu") if pytest.importorskip("transformers") else None
    assert hf.complete([prompt], SamplingParams(max_new_tokens=8, stop=COMPLETION_STOP, heal=True))[0][0] == healed
