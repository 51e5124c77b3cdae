"""Evaluation: metrics, protocols, and what is written about them.

    metrics.py   metric definitions, protocols (densedepth, eigen, kitti crops), streaming accumulation
    evaluate.py  a model over a dataset through the one inference path -> metrics
    stats.py     statistics over seeds (mean, sd, t intervals, paired differences)
    report.py    metric tables (Markdown, HTML)

May import: inference (the one inference path), models, data and the root conventions.
"""
