"""seats-exp: training-free token selection experiments for omni-modal LLMs."""
