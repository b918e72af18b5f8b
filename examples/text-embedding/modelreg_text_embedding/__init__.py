"""modelreg-text-embedding: the "sentence-embedding" runtime plugin for modelreg."""
