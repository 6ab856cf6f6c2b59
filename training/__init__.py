"""Training pipeline: dataset, LoRA fine-tuning, merge, GGUF export, quantisation, evaluation."""
