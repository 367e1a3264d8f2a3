"""Evaluation: the official retrieval metrics, whole-split analysis of an engine's scores, and the WTI weight statistics."""
