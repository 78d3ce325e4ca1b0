"""Tokenizers and causal LMs: trained here from config (the tiny world) or loaded from disk / the hub."""
