"""Interpretation service: turns an AnomalyReport into a grounded, structured diagnosis with a
small local GGUF model."""
