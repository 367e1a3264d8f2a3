"""Models: CLIP towers with token and frame features, DRL's interactions and temporal module, UNIFY's lexicon branch."""

from tvr_demo.models.config import ModelConfig, UnifyConfig
from tvr_demo.models.tvr import TextFeatures, TVRModel, VideoFeatures

__all__ = ["ModelConfig", "UnifyConfig", "TVRModel", "TextFeatures", "VideoFeatures"]
