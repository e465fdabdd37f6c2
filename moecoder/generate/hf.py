"""hf:NAME_OR_PATH — transformers' AutoModelForCausalLM (a local directory or a hub name)."""

from __future__ import annotations

from pathlib import Path

from moecoder.errors import UserError
from moecoder.generate.local import LocalBackend, allow_only, ban, repeated_ngram_bans, special_token_ids, weights_sha256


def _stop_criteria(stop_ids: list[list[int]]):
    """transformers stopping criteria ending each row whose ids end with one of the stop id sequences."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopOnIds(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            hit = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
            for ids in stop_ids:
                if input_ids.shape[1] >= len(ids):
                    hit |= (input_ids[:, -len(ids):] == torch.tensor(ids, device=input_ids.device)).all(dim=1)
            return hit

    return StoppingCriteriaList([StopOnIds()])


def _constraints(prompt_width: int, n: int, first_allowed: list | None):
    """A transformers logits processor: at the first step only each row's allowed ids (token healing), then no
    repeat of an n-gram of the generated ids (not the prompt's, unlike transformers' no_repeat_ngram_size)."""
    from transformers import LogitsProcessorList

    def process(input_ids, scores):
        if input_ids.shape[1] == prompt_width:
            return allow_only(scores, first_allowed) if first_allowed else scores
        return ban(scores, repeated_ngram_bans(input_ids[:, prompt_width:].tolist(), n)) if n >= 2 else scores

    return LogitsProcessorList([process])


def _streamer(on_step):
    """A transformers streamer handing each step's ids [B] to on_step (its first put is the prompt)."""
    from transformers.generation.streamers import BaseStreamer

    class StepStreamer(BaseStreamer):
        def __init__(self):
            self.prompt_seen = False

        def put(self, value):
            if self.prompt_seen:
                on_step(value.reshape(-1))
            self.prompt_seen = True

        def end(self):
            pass

    return StepStreamer()


class HFBackend(LocalBackend):
    """A transformers causal LM with its tokenizer; its chat template, or DeepSeek-Coder's where it has none."""

    def __init__(self, name_or_path: str, batch_size: int = 8, dtype: str | None = None, device: str | None = None,
                 revision: str | None = None):
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise UserError("hf: models need transformers: pip install 'transformers>=5'") from exc
        super().__init__(batch_size)
        self.name_or_path = name_or_path
        self.spec = f"hf:{name_or_path}"
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=revision)
            self.model = AutoModelForCausalLM.from_pretrained(
                name_or_path, revision=revision, dtype=getattr(torch, dtype) if dtype else None).to(self.device).eval()
        except OSError as exc:
            raise UserError(f"hf model {name_or_path}: {str(exc).splitlines()[0]}") from exc
        self.chat_template = self.tokenizer.chat_template
        self.bos_token = self.tokenizer.bos_token or ""
        self.eos_token = self.tokenizer.eos_token or ""
        self.eos_ids = special_token_ids(self.tokenizer.get_vocab(), self.eos_token)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.eos_ids[0] if self.eos_ids else 0)
        self._revision = None

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def vocab(self) -> dict[str, int]:
        return self.tokenizer.get_vocab()

    def fast_tokenizer(self):
        return self.tokenizer.backend_tokenizer

    def _generate(self, input_ids, attention_mask, max_new_tokens, temperature, top_p, seed, stop_ids, on_step,
                  no_repeat_ngram=0, first_allowed=None):
        import torch

        torch.manual_seed(seed)
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0} if temperature > 0 \
            else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        with torch.no_grad():
            out = self.model.generate(
                input_ids.to(self.device), attention_mask=attention_mask.to(self.device),
                max_new_tokens=max_new_tokens, eos_token_id=self.eos_ids or None, pad_token_id=self.pad_id,
                stopping_criteria=_stop_criteria(stop_ids) if stop_ids else None,
                streamer=_streamer(on_step) if on_step else None,
                logits_processor=(_constraints(input_ids.shape[1], no_repeat_ngram, first_allowed)
                                  if no_repeat_ngram or first_allowed else None),
                **sampling)
        return out[:, input_ids.shape[1]:].cpu()

    def describe(self) -> dict:
        if self._revision is None:
            local = Path(self.name_or_path)
            self._revision = (f"sha256:{weights_sha256(local)}" if local.is_dir()
                              else getattr(self.model.config, "_commit_hash", None) or "unknown")
        return {"spec": self.spec, "backend": "hf", "revision": self._revision,
                "template": self.template_description(), "batch_size": self.batch_size,
                "dtype": str(self.model.dtype).removeprefix("torch."), "device": self.device}
