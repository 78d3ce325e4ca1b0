"""Weight merging baselines (linear, task arithmetic, TIES) through mergekit."""

from fusebench.merge.merge import METHODS, MergeModel, MergeSpec, check_mergeable, merge_models, parse_merge_spec

__all__ = ["METHODS", "MergeModel", "MergeSpec", "check_mergeable", "merge_models", "parse_merge_spec"]
