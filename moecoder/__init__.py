"""moecoder: build, train, instruction-tune, serve and measure DeepSeek-Coder-style code models.

Data flows one way: config -> model -> train -> checkpoint -> generate -> evaluate -> report.
Heavy modules (torch) are imported lazily so that `moecoder evaluate` starts fast.
"""

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy re-exports: `moecoder.load_model` without importing torch at package import.
    if name in ("load_model", "save_model"):
        from moecoder import model

        return getattr(model, name)
    raise AttributeError(f"module 'moecoder' has no attribute {name!r}")
