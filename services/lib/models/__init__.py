"""Model install, GGUF conversion, validation and the compute path for serving."""
