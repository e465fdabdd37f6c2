"""The DeepSeek-style model: dense/GQA (DeepSeek-Coder v1) and MoE + MLA (DeepSeek-V2/V3) in one Transformer.

`ModelConfig` reads transformers' config.json; `load_model` / `save_model` read and write transformers'
checkpoint layout; `accounting` counts parameters, FLOPs and KV-cache bytes without building a model.
`config` and `accounting` do not import torch; the rest loads it on first use.
"""

from moecoder.model.config import ModelConfig

__all__ = ["ModelConfig", "Transformer", "load_model", "save_model"]


def __getattr__(name):
    # Lazy: `moecoder stats` and the CLI need ModelConfig/accounting without importing torch.
    if name == "Transformer":
        from moecoder.model.transformer import Transformer

        return Transformer
    if name in ("load_model", "save_model"):
        from moecoder.model import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module 'moecoder.model' has no attribute {name!r}")
