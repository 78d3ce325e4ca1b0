"""Weight merging baselines (linear, task arithmetic, TIES, SCE, ... and VaRM as per-tensor linear) through mergekit."""

from fusebench.merge.merge import METHODS, MergeModel, MergeSpec, check_mergeable, merge_models, parse_merge_spec
from fusebench.merge.varm import varm_merge

__all__ = ["METHODS", "MergeModel", "MergeSpec", "check_mergeable", "merge_models", "parse_merge_spec", "varm_merge"]
