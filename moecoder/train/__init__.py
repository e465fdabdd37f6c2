"""The training recipe: code corpus, BPE tokenizer, fill-in-the-middle pre-training, instruction tuning.

Entry points (none of these imports torch until a training function runs):
    build_corpus(source=None, out_dir=None, ...) -> Corpus
    train_tokenizer(texts, vocab_size=4096, out_dir=None) -> CoderTokenizer
    load_tokenizer(path) -> CoderTokenizer;  format_instruction(instruction) -> str
    pretrain(cfg, out_dir, minutes=None, steps=None, resume=False) -> dict
    sft(model_dir, data=None, out_dir="sft-run", minutes=None, steps=None, ...) -> dict

`moecoder.train.pretrain` and `moecoder.train.sft` are these functions; their modules stay importable
with `from moecoder.train.pretrain import prepare_data` (a from-import reads the module itself).
"""

from moecoder.text import format_instruction, load_tokenizer, train_tokenizer
from moecoder.train.config import NANO_MOE, TrainConfig, load_config
from moecoder.train.corpus import build_corpus
from moecoder.train.pretrain import pretrain
from moecoder.train.sft import sft

__all__ = ["NANO_MOE", "TrainConfig", "build_corpus", "format_instruction", "load_config", "load_tokenizer",
           "pretrain", "sft", "train_tokenizer"]
