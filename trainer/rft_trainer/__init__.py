"""The LoRA policy-gradient trainer (`python -m rft_trainer`). Nothing is imported here."""
