"""Reports on eval runs: a self-contained report.html (moecoder.report.html.write_report) and paired
per-task comparisons of two runs with a p-value (moecoder.report.compare.compare_runs).

Both read the run directory that `moecoder eval` writes (layout in moecoder.report.runs); matplotlib is
imported only while a report is drawn.
"""
