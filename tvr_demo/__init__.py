"""tvr_demo: see inside text-video retrieval models (DRL and UNIFY)."""

__version__ = "0.1.0"
