"""SLURM/submitit glue."""
