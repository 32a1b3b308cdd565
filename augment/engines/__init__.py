"""Engines of `synth expand` beyond the local process pool (optional extras)."""
