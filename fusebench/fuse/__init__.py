"""Fusion: combine aligned teachers' sparse distributions into one target (functions.py) and train on it with a
sparse cross-entropy gathered on the target's ids (loss.py)."""

from fusebench.fuse.functions import (DEFAULT_FUSION, FUSION_FUNCTIONS, Candidate, FusedTarget, fuse,
                                      get_fusion_function)

__all__ = ["DEFAULT_FUSION", "FUSION_FUNCTIONS", "Candidate", "FusedTarget", "fuse", "get_fusion_function"]
