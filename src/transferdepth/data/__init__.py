"""Datasets: every source yields the same sample (see `base.py`); `open_dataset(spec)` opens any of them.

Each source registers itself in its reader's module (`registry.register_source`); see registry.py.
`collate.py` stacks samples into batches (DataLoader workers reuse shared-memory buffers).
May import: the root conventions (recipe, utils) only; independent of models, losses and metrics.
"""

from transferdepth.data.base import DatasetError, Sample, check_sample
from transferdepth.data.registry import open_dataset, parse_spec, register_source, sources
from transferdepth.data.wrappers import InMemory, SkipBad

__all__ = ["DatasetError", "InMemory", "Sample", "SkipBad", "check_sample", "open_dataset", "parse_spec",
           "register_source", "sources"]
