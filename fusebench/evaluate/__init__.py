"""Evaluation on lm-evaluation-harness: named suites of task YAMLs, offline packaged data, results + manifests.

Call `fusebench.evaluate.api.evaluate_model`; suites are listed in `fusebench.evaluate.suites.SUITES`.
"""
