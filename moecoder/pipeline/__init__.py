"""What a user runs end to end: `moecoder eval` (generate with a backend, evaluate in the sandbox, report;
moecoder.pipeline.evalrun) and `moecoder quickstart` (corpus to report on a laptop; moecoder.pipeline.quickstart).
"""
