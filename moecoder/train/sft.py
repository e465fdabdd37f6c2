"""Instruction tuning: DeepSeek-Coder's instruct template, loss on response tokens only.

Data: JSONL rows {"instruction", "output"} or {"messages": [{"role", "content"}, ...]}, or the built-in
set derived from the corpus (a function's signature and docstring as the instruction, the function
as the response), decontaminated like the corpus.
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path
from typing import Callable, Iterable

from moecoder.errors import UserError
from moecoder.files import parse_jsonl
from moecoder.text import DEFAULT_SYSTEM_PROMPT, EOT, CoderTokenizer, load_tokenizer
from moecoder.text.prompts import humaneval_instruction
from moecoder.train.corpus import Decontaminator, Document, benchmark_texts, build_corpus

SFT_DEFAULTS = {"seq_len": 512, "batch_size": 8, "lr": 5e-4, "warmup_steps": 10, "steps": 200,
                "log_every": 10, "save_every": 100, "balance": "bias"}


def read_sft_jsonl(path: str | os.PathLike) -> list[list[dict]]:
    """Conversations (lists of {"role", "content"}) from {"instruction","output"} or {"messages"} rows."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"SFT data {path} not found")
    conversations = []
    for number, row in parse_jsonl(path.read_text(encoding="utf-8").splitlines(), f"SFT data {path}"):
        where = f"SFT data {path}, line {number}"
        if not isinstance(row, dict):
            raise UserError(f"{where}: expected a JSON object")
        if "messages" in row:
            messages = row["messages"]
        elif "instruction" in row and "output" in row:
            messages = [{"role": "user", "content": row["instruction"]}, {"role": "assistant", "content": row["output"]}]
        else:
            raise UserError(f"{where}: expected keys instruction+output or messages")
        if not any(m.get("role") == "assistant" for m in messages):
            raise UserError(f"{where}: no assistant message to learn from")
        conversations.append(messages)
    if not conversations:
        raise UserError(f"SFT data {path} is empty")
    return conversations


def chat_segments(messages: list[dict]) -> list[tuple[str, bool]]:
    """The rendered chat template cut into (text, trains) pieces; the pieces concatenate to render_chat().

    The response piece is "{content}\\n<|EOT|>": the prompt at inference ends with "### Response:\\n" (as the
    official template renders it), so the model learns the answer and the end-of-turn token, nothing of the prompt.
    """
    segments = [] if any(m["role"] == "system" for m in messages) else [(DEFAULT_SYSTEM_PROMPT, False)]
    for message in messages:
        role, content = message["role"], message["content"]
        if role == "system":
            segments.append((content, False))
        elif role == "user":
            segments.append((f"### Instruction:\n{content}\n", False))
        else:
            segments += [("### Response:\n", False), (f"{content}\n{EOT}", True), ("\n", False)]
    return segments


def encode_chat(tokenizer: CoderTokenizer, messages: list[dict]) -> tuple[list[int], list[bool]]:
    """Token ids of the whole conversation and, per token, whether it is a training target."""
    ids, mask = [tokenizer.bos_id], [False]
    for text, trains in chat_segments(messages):
        piece = tokenizer.encode(text)
        ids += piece
        mask += [trains] * len(piece)
    return ids, mask


def whole_examples(tokenizer: CoderTokenizer, conversations: list[list[dict]], seq_len: int,
                   log: Callable[[str], None] | None) -> list[tuple[list[int], list[bool]]]:
    """The encoded conversations that fit in one sequence. A response cut by the sequence end would teach the
    model replies that never close their code block nor end their turn, so longer ones are left out."""
    encoded = [encode_chat(tokenizer, messages) for messages in conversations]
    fitting = [example for example in encoded if len(example[0]) <= seq_len + 1]
    if log is not None and len(fitting) < len(encoded):
        log(f"{len(encoded) - len(fitting)} of {len(encoded)} SFT examples are longer than seq_len={seq_len} "
            "tokens and are left out")
    return fitting


def function_examples(document: Document, max_lines: int = 60) -> list[dict]:
    """Public module-level functions with a docstring: signature+docstring -> instruction, function -> output.

    The instruction alternates between two phrasings: "write a function with this signature and docstring", and
    DeepSeek-Coder's chat-mode HumanEval instruction ("Please continue to complete the function...") around the
    function's own lines up to its docstring, the form an instruct model is evaluated in. A model tuned for a
    minute on the first phrasing alone answered the second with a function of another name or an empty fenced
    block; with both it still gives some empty blocks (benchmarks/train.md)."""
    try:
        tree = ast.parse(document.text)
    except (SyntaxError, ValueError):
        return []
    lines = document.text.splitlines()
    examples = []
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.name.startswith("_"):
            continue
        docstring = ast.get_docstring(node)
        if not docstring or len(node.body) < 2 or node.end_lineno - node.lineno > max_lines or node.decorator_list:
            continue
        function = "\n".join(lines[node.lineno - 1:node.end_lineno])
        head = "\n".join(lines[node.lineno - 1:node.body[0].end_lineno])  # signature and docstring, as written
        instruction = (humaneval_instruction(head) if len(examples) % 2 else
                       f"Write a Python function with this signature and docstring.\n```python\n{head}\n```")
        examples.append({"instruction": instruction, "output": f"```python\n{function}\n```", "path": document.path})
    return examples


def corpus_instructions(documents: Iterable[Document], decontaminator: Decontaminator | None = None) -> list[dict]:
    """The built-in instruction set of a corpus, without examples that share a 10-gram with a benchmark."""
    examples = [example for doc in documents for example in function_examples(doc)]
    if decontaminator is None:
        return examples
    return [ex for ex in examples if not decontaminator.is_contaminated(ex["instruction"] + "\n" + ex["output"])]


def as_messages(example: dict) -> list[dict]:
    return [{"role": "user", "content": example["instruction"]}, {"role": "assistant", "content": example["output"]}]


def builtin_conversations(source=None, mbpp_path=None, decontaminate: bool = True, heldout_fraction: float = 0.02,
                          log: Callable[[str], None] = print) -> tuple[list[list[dict]], list[list[dict]]]:
    """(train, held-out) conversations from a corpus; held-out ones come from files kept out of training."""
    corpus = build_corpus(source, decontaminate=decontaminate, mbpp_path=mbpp_path,
                          heldout_fraction=heldout_fraction, log=log)
    decontaminator = Decontaminator(benchmark_texts(mbpp_path=mbpp_path)) if decontaminate else None
    train = [as_messages(ex) for ex in corpus_instructions(corpus.train, decontaminator)]
    heldout = [as_messages(ex) for ex in corpus_instructions(corpus.heldout, decontaminator)]
    log(f"built-in instruction set: {len(train)} training, {len(heldout)} held-out examples")
    return train, heldout


def split_conversations(conversations: list[list[dict]], fraction: float):
    """Every round(1/fraction)-th conversation held out (deterministic)."""
    if fraction <= 0 or len(conversations) < 2:
        return conversations, []
    every = max(2, round(1 / fraction))
    return ([c for i, c in enumerate(conversations) if i % every != every - 1],
            [c for i, c in enumerate(conversations) if i % every == every - 1])


def sft(model_dir: str | os.PathLike, data: str | os.PathLike | None = None, out_dir: str | os.PathLike = "sft-run", *,
        minutes: float | None = None, steps: int | None = None, resume: bool = False, source=None,
        mbpp_path=None, decontaminate: bool = True, log: Callable[[str], None] = print, **overrides) -> dict:
    """Instruction-tune the model in model_dir (ours or a downloaded DeepSeek-Coder with tokenizer.json).

    data: a JSONL file, or None for the built-in set derived from `source` (default: the stdlib).
    overrides: TrainConfig fields (seq_len, batch_size, lr, ...). Writes <out_dir>/model (weights +
    tokenizer, eos_token_id = [EOS, <|EOT|>]) and returns the run summary with the held-out perplexity
    (response tokens of held-out examples).
    """
    import torch

    from moecoder.train.loop import Trainer, init_runtime, seed_everything
    from moecoder.train.packing import BatchStream, PackedExamples
    from moecoder.train.pretrain import build_model, coerce_config, plan_layout

    out = Path(out_dir)
    if resume and not (out / "checkpoints" / "latest").is_file():
        raise UserError(f"--resume: no checkpoint in {out / 'checkpoints'}")
    if not resume and (out / "checkpoints").exists():
        raise UserError(f"{out} already holds a run: pass --resume to continue it or choose another directory")
    if not Path(model_dir, "config.json").is_file():
        raise UserError(f"{model_dir} is not a model directory (no config.json)")
    cfg = coerce_config(SFT_DEFAULTS | {k: v for k, v in overrides.items() if v is not None} | {"model_path": str(model_dir)},
                        minutes=minutes, steps=steps)
    runtime = init_runtime()
    layout = plan_layout(cfg, runtime)
    tokenizer = load_tokenizer(model_dir)
    if data is None:
        # Same held-out fraction as pre-training: the split hashes paths, so the same files stay held out.
        train, heldout = builtin_conversations(source, mbpp_path, decontaminate, cfg.heldout_fraction,
                                               log=log if runtime.is_main else (lambda _: None))
    else:
        train, heldout = split_conversations(read_sft_jsonl(data), 0.05)
    if not train:
        raise UserError("no SFT training examples")
    seed_everything(cfg.seed)
    model = build_model(cfg, tokenizer, layout, runtime.device).to(runtime.device)
    train_rows = PackedExamples(whole_examples(tokenizer, train, cfg.seq_len, log if runtime.is_main else None),
                                cfg.seq_len, tokenizer.pad_id)
    heldout_rows = PackedExamples(whole_examples(tokenizer, heldout, cfg.seq_len, None), cfg.seq_len, tokenizer.pad_id)
    if not len(train_rows):
        raise UserError(f"no SFT example fits in seq_len={cfg.seq_len} tokens: raise seq_len")
    stream = BatchStream(train_rows, cfg.batch_size, cfg.seed, runtime.rank, runtime.world_size)
    trainer = Trainer(model, stream, cfg, out, runtime, tokenizer=tokenizer, heldout=heldout_rows, layout=layout)
    if resume:
        trainer.resume()
    summary = trainer.fit() | {"model_dir": str(out / "model"), "train_examples": len(train),
                               "heldout_examples": len(heldout)}
    model.config.eos_token_id = [tokenizer.eos_id, tokenizer.eot_id]
    trainer.save_model(out / "model")  # a collective: every rank writes its share
    if runtime.is_main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        if "heldout_ppl" in summary:
            log(f"held-out perplexity {summary['heldout_ppl']:.2f} on the responses of {len(heldout)} held-out examples")
    if runtime.distributed:
        torch.distributed.barrier()
    return summary
