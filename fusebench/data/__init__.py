"""Corpora: the offline tiny world's domains and general mix, hub datasets and local text files."""
