"""Pre-training end to end: corpus -> tokenizer -> FIM + packed shards -> model -> training loop -> model dir."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

from moecoder.errors import UserError
from moecoder.files import write_json
from moecoder.text import CoderTokenizer, load_tokenizer, train_tokenizer
from moecoder.train.config import TrainConfig, load_config
from moecoder.train.corpus import build_corpus
from moecoder.train.fim import FimEncoder, within_windows

# The config fields the prepared data depends on; a data dir prepared with other values is rebuilt.
DATA_FIELDS = ("source", "tokenizer", "vocab_size", "pre_tokenizer", "max_files", "documents", "decontaminate",
               "mbpp_path", "heldout_fraction", "fim_rate", "fim_spm_rate", "fim_unit", "fim_max_chars", "seq_len",
               "seed")


@dataclass
class PreparedData:
    """A data directory: corpus/ (JSONL + report), tokenizer/, train/ and heldout/ token shards."""

    root: Path
    tokenizer: CoderTokenizer
    report: dict

    @property
    def train_dir(self) -> Path:
        return self.root / "train"

    @property
    def heldout_dir(self) -> Path:
        return self.root / "heldout"


def prepare_data(cfg: TrainConfig, data_dir: str | os.PathLike, log: Callable[[str], None] = print) -> PreparedData:
    """Build (or reuse, when prepared with the same settings) the corpus, tokenizer and shards."""
    from moecoder.train.packing import write_shards

    root = Path(data_dir)
    settings = {name: getattr(cfg, name) for name in DATA_FIELDS}
    stamp = root / "prepared.json"
    if stamp.is_file() and json.loads(stamp.read_text())["settings"] == settings:
        return PreparedData(root, load_tokenizer(root / "tokenizer"), json.loads(stamp.read_text())["report"])
    corpus = build_corpus(cfg.source, root / "corpus", decontaminate=cfg.decontaminate, mbpp_path=cfg.mbpp_path,
                          heldout_fraction=cfg.heldout_fraction, max_files=cfg.max_files, log=log)
    if not corpus.train:
        raise UserError(f"no training files left in {corpus.report.source} after filtering")
    if cfg.tokenizer:
        tokenizer = load_tokenizer(cfg.tokenizer)
        tokenizer.save(root / "tokenizer")
    else:
        tokenizer = train_tokenizer(tokenizer_texts(corpus.train), cfg.vocab_size, root / "tokenizer",
                                    pre_tokenizer_name=cfg.pre_tokenizer)
    log(f"tokenizer: {tokenizer.vocab_size} tokens")
    fim = FimEncoder(tokenizer, cfg.fim_rate, cfg.fim_spm_rate, seed=cfg.seed, max_chars=cfg.fim_max_chars,
                     unit=cfg.fim_unit)
    examples = (ids for doc in training_documents(corpus.train, cfg.documents) for ids in fim.encode(doc.text))
    if cfg.fim_max_chars:  # pieces meant to fit the context: each FIM example in one training window
        examples = within_windows(examples, cfg.seq_len, lambda ids: ids[1:2] == [tokenizer.fim_begin_id])
    train = write_shards(examples, root / "train", tokenizer.vocab_size)
    plain = FimEncoder(tokenizer, rate=0.0)
    heldout = write_shards((ids for doc in training_documents(corpus.heldout, cfg.documents)
                            for ids in plain.encode(doc.text)), root / "heldout", tokenizer.vocab_size)
    log(f"shards: {train['tokens']:,} training tokens, {heldout['tokens']:,} held-out tokens")
    report = corpus.report.to_dict() | {"train_tokens": train["tokens"], "heldout_tokens": heldout["tokens"]}
    write_json(stamp, {"settings": settings, "report": report})
    return PreparedData(root, tokenizer, report)


DOCUMENT_KINDS = {"files": "files", "functions": "functions", "both": "files and functions"}  # as logs name them


def training_documents(files: list, documents: str) -> list:
    """The documents TrainConfig.documents names, made from the corpus's training (or held-out) files."""
    from moecoder.train.corpus import function_documents

    if documents == "files":
        return files
    functions = function_documents(files)
    return functions if documents == "functions" else files + functions


def tokenizer_texts(documents: list) -> Iterator[str]:
    """What the BPE is trained on: the training files, and the built-in instruction set derived from them
    rendered in the chat template. Like DeepSeek-Coder's tokenizer, which saw Markdown, ours then has the
    instruction format's tokens: "```python" in one or two tokens rather than "``" + "`" + "python", where
    "``" is what the standard library's reStructuredText docstrings taught the model to repeat."""
    from moecoder.text import render_chat
    from moecoder.train.sft import as_messages, corpus_instructions

    yield from (doc.text for doc in documents)
    for example in corpus_instructions(documents):
        yield render_chat(as_messages(example), bos_token="")


def plan_layout(cfg: TrainConfig, runtime):
    """The run's parallel layout (one clear error when expert_parallel does not fit the model or the world)."""
    from moecoder.model import ModelConfig
    from moecoder.train.parallel import Layout

    n_experts = (ModelConfig.from_hf(Path(cfg.model_path)) if cfg.model_path else ModelConfig(**cfg.model)).n_routed_experts
    return Layout.plan(cfg.expert_parallel, cfg.fsdp, runtime.rank, runtime.world_size, runtime.device, n_experts)


def build_model(cfg: TrainConfig, tokenizer: CoderTokenizer, layout=None, device=None):
    """A freshly initialised model from cfg.model (vocab from the tokenizer), or the checkpoint at model_path.

    With expert parallelism a checkpoint is read in this rank's share only (see moecoder.train.shards); a fresh
    model is initialised whole, as one process would, so that every layout starts from the same weights."""
    import torch

    from moecoder.model import ModelConfig, Transformer, load_model

    if cfg.model_path and layout is not None and layout.expert_parallel:
        from moecoder.train.shards import load_sharded_model

        return load_sharded_model(Path(cfg.model_path), layout, device or torch.device("cpu"))
    if cfg.model_path:
        return load_model(cfg.model_path, dtype=torch.float32)
    fields = dict(cfg.model) | {"vocab_size": tokenizer.vocab_size, "bos_token_id": tokenizer.bos_id,
                                "eos_token_id": tokenizer.eos_id, "pad_token_id": tokenizer.pad_id,
                                "aux_loss_alpha": cfg.aux_loss_alpha if cfg.balance == "aux" else 0.0}
    torch.manual_seed(cfg.seed)
    return Transformer(ModelConfig(**fields))


def coerce_config(cfg: TrainConfig | dict | str | os.PathLike | None, **values) -> TrainConfig:
    """Accept a TrainConfig, a dict of its fields, a config file path or None (defaults)."""
    if isinstance(cfg, TrainConfig):
        return replace(cfg, **{k: v for k, v in values.items() if v is not None})
    if isinstance(cfg, dict):
        data = dict(cfg)
        overrides = [f"model.{k}={json.dumps(v)}" for k, v in data.pop("model", {}).items()]
        return load_config(None, overrides, **(data | {k: v for k, v in values.items() if v is not None}))
    return load_config(cfg, (), **values)


def pretrain(cfg: TrainConfig | dict | str | os.PathLike | None, out_dir: str | os.PathLike, *,
             minutes: float | None = None, steps: int | None = None, resume: bool = False,
             log: Callable[[str], None] = print) -> dict:
    """Pre-train a model; returns the run summary (with "model_dir" and the held-out perplexity).

    out_dir gets data/ (unless cfg.data_dir), checkpoints/, train_log.jsonl, summary.json and model/
    (save_model layout + tokenizer files). Works unchanged under torchrun (DDP, or FSDP2 with fsdp=true;
    expert_parallel=N splits the routed experts over N ranks).
    """
    import torch

    from moecoder.train.loop import Trainer, init_runtime, seed_everything
    from moecoder.train.packing import BatchStream, PackedDataset

    cfg = coerce_config(cfg, minutes=minutes, steps=steps)
    out = Path(out_dir)
    runtime = init_runtime()
    layout = plan_layout(cfg, runtime)
    if resume and not (out / "checkpoints" / "latest").is_file():
        raise UserError(f"--resume: no checkpoint in {out / 'checkpoints'}")
    if not resume and (out / "checkpoints").exists():
        raise UserError(f"{out} already holds a run: pass --resume to continue it or choose another directory")
    data_dir = Path(cfg.data_dir) if cfg.data_dir else out / "data"
    if runtime.is_main:
        data = prepare_data(cfg, data_dir, log)
    if runtime.distributed:
        torch.distributed.barrier()
    if not runtime.is_main:
        data = prepare_data(cfg, data_dir, log=lambda _: None)
    seed_everything(cfg.seed)
    model = build_model(cfg, data.tokenizer, layout, runtime.device).to(runtime.device)
    train_set = PackedDataset(data.train_dir, cfg.seq_len)
    heldout = PackedDataset(data.heldout_dir, cfg.seq_len)
    stream = BatchStream(train_set, cfg.batch_size, cfg.seed, runtime.rank, runtime.world_size)
    trainer = Trainer(model, stream, cfg, out, runtime, tokenizer=data.tokenizer, heldout=heldout, layout=layout)
    if resume:
        trainer.resume()
        if runtime.is_main:
            log(f"resumed at step {trainer.step} (rank 0 read {trainer.bytes_read / 1e6:,.1f} MB of weights)")
    elif runtime.is_main:
        log(f"model: {model.num_params(active=True):,} active / {model.num_params():,} total parameters; "
            f"{len(train_set):,} training sequences of {cfg.seq_len} tokens")
    summary = trainer.fit() | {"model_dir": str(out / "model"), "corpus": data.report}
    trainer.save_model(out / "model")  # a collective: every rank writes its share
    if runtime.is_main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        if "heldout_ppl" in summary:
            log(f"held-out perplexity {summary['heldout_ppl']:.2f} (loss {summary['heldout_loss']:.4f}) "
                f"on {min(len(heldout) * cfg.seq_len, cfg.eval_tokens):,} tokens of held-out {DOCUMENT_KINDS[cfg.documents]}")
    if runtime.distributed:
        torch.distributed.barrier()
    return summary
