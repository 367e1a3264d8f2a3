"""Diagnosis: what a model cannot tell apart, which word decides a rank, the papers' ablations and the embedding map."""
