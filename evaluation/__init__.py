"""Evaluation: the lmms-eval model wrapper, benchmark task folders, the synthetic set, media loading."""
