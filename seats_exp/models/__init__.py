"""Model loading, tiny checkpoints and adapters."""
