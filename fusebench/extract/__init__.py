"""Source distributions: run each model over the corpus once and keep every position's top-k next-token log-probs.

`extract_distributions` (extract.py) writes a `DistributionStore` (store.py): sharded, memory-mapped, checksummed,
40 bytes per token per model at k = 10.
"""

from fusebench.extract.store import DistributionStore, SequenceDistributions, StoreWriter

__all__ = ["DistributionStore", "SequenceDistributions", "StoreWriter", "extract_distributions"]


def __getattr__(name: str):
    # extract.py imports torch lazily through its functions; keep `import fusebench.extract` light anyway
    if name == "extract_distributions":
        from fusebench.extract.extract import extract_distributions

        return extract_distributions
    raise AttributeError(name)
