"""Retrieval: encode a gallery once, score queries against it, search and explain (the engine facade)."""
