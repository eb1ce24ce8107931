"""Example seats-exp method package: ``stride`` keeps evenly spaced video/audio tokens before the LLM."""
