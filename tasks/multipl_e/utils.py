"""lm-eval hooks for the code tasks (`!function utils.<name>` in the YAMLs next to this file).

The work is in fusebench.evaluate.multipl_e; this module only re-exports it where lm-eval looks for it.
"""

from fusebench.evaluate.multipl_e import (check_revision, multipl_e_prompt, process_bpb, process_humaneval,
                                         process_multipl_e)

__all__ = ["check_revision", "multipl_e_prompt", "process_bpb", "process_humaneval", "process_multipl_e"]
