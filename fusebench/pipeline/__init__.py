"""Recipes, the stage graph and the cached, resumable runner that executes it."""
