"""A warm LoRA training session behind the Tinker API (`python -m rft_trainer.session`)."""
