"""Training: DRL's recipe (BertAdam, warm-up cosine, parameter groups), the losses composed per model, cached frames."""
