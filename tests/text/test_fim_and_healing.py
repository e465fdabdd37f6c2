"""The prompt builders: DeepSeek-Coder's fill-in-the-middle prompt and token healing."""

import pytest

from moecoder.errors import UserError
from moecoder.text import EOT, FIM_BEGIN, FIM_END, FIM_HOLE, TokenHealer, fim_prompt, load_tokenizer


@pytest.fixture(scope="module")
def tok(tokenizer_dir):
    return load_tokenizer(tokenizer_dir)


def test_fim_prompt_is_psm_with_the_tokenizers_fim_tokens(tok):
    prompt = fim_prompt("def add(a, b):\n", "\n    return c\n", tok.tokenizer.get_vocab(with_added_tokens=True))
    assert prompt == f"{FIM_BEGIN}def add(a, b):\n{FIM_HOLE}\n    return c\n{FIM_END}"
    ids = tok.encode(prompt)
    assert ids[0] == tok.fim_begin_id and ids[-1] == tok.fim_end_id and ids.count(tok.fim_hole_id) == 1


def test_fim_prompt_without_fim_tokens_names_what_is_missing(tok):
    vocab = {token: i for token, i in tok.tokenizer.get_vocab(with_added_tokens=True).items() if token != FIM_HOLE}
    with pytest.raises(UserError, match=f"no fill-in-the-middle tokens \\({FIM_HOLE} missing\\)"):
        fim_prompt("a", "b", vocab)


def test_healing_lets_the_natural_tokenisation_through(tok):
    """"os.pa" ends on "pa", a token the model saw rarely before "th"; healed, "path" may come first."""
    healer = TokenHealer(tok.tokenizer)
    prompt, full = "    return os.pa", "    return os.path.join(a, b)"
    healed = healer.heal(tok.encode(prompt))
    natural = tok.encode(full)
    assert tok.decode(natural[len(healed.ids):len(healed.ids) + 1]) != "pa"  # the prompt's last token is unnatural
    assert healed.text == "pa" and healed.ids == tok.encode(prompt)[:-1] == natural[:len(healed.ids)]
    assert natural[len(healed.ids)] in healed.allowed
    assert healed.strip(tok.decode(natural[len(healed.ids):])) == "th.join(a, b)"


def test_allowed_tokens_are_exactly_those_starting_with_the_removed_text(tok):
    healer = TokenHealer(tok.tokenizer)
    healed = healer.heal(tok.encode("x = re.comp"))
    specials = set(tok.tokenizer.get_added_tokens_decoder())
    brute = [i for i in range(tok.vocab_size) if i not in specials and tok.decode([i]).startswith(healed.text)]
    assert list(healed.allowed) == brute and len(brute) > 1


def test_first_step_logits_are_masked_to_the_allowed_tokens(tok):
    import torch

    healed = TokenHealer(tok.tokenizer).heal(tok.encode("    return os.pa"))
    logits = torch.randn(2, tok.vocab_size)
    masked = healed.mask_logits(logits)
    finite = torch.isfinite(masked)
    assert finite.sum(dim=-1).tolist() == [len(healed.allowed)] * 2
    assert finite[0].nonzero()[:, 0].tolist() == list(healed.allowed)
    assert torch.equal(masked[finite], logits[finite]) and torch.isfinite(logits).all()  # a copy, input untouched


def test_nothing_to_heal(tok):
    """One token, a special token last, or a last token that is part of a UTF-8 character: prompt unchanged."""
    healer = TokenHealer(tok.tokenizer)
    for prompt in ("x", f"def f():{EOT}", f"{FIM_BEGIN}a{FIM_HOLE}b{FIM_END}", "s = '🙂"):
        ids = tok.encode(prompt)
        healed = healer.heal(ids)
        assert healed.ids == ids and healed.allowed is None and healed.mask_logits("logits") == "logits"
    assert "\ufffd" in tok.decode(tok.encode("s = '🙂")[-1:])  # the emoji is split into byte tokens here
