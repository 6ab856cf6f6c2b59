"""The language model: where its file comes from and how it is run."""
