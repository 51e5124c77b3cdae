"""Datasets: every source yields the same sample (see `base.py`); `open_dataset(spec)` opens any of them."""

from transferdepth.data.base import DatasetError, Sample, check_sample
from transferdepth.data.registry import SkipBad, open_dataset, parse_spec

__all__ = ["DatasetError", "Sample", "SkipBad", "check_sample", "open_dataset", "parse_spec"]
