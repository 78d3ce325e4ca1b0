"""Output ensembles: average the next-token distributions of models that share a tokenizer.

Importing this package registers `fusebench_ensemble` with transformers' Auto classes, so an ensemble directory
loads with `AutoModelForCausalLM.from_pretrained` like any other model.
"""

from fusebench.ensemble.model import (EnsembleCache, EnsembleConfig, EnsembleForCausalLM, check_compatible,
                                      save_ensemble)

__all__ = ["EnsembleCache", "EnsembleConfig", "EnsembleForCausalLM", "check_compatible", "save_ensemble"]
