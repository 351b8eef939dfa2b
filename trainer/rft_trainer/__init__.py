"""The LoRA policy-gradient trainer (`python -m rft_trainer`) and, in `rft_trainer.server`, the
reference inference server. Nothing is imported here: the server's light modules must load without torch."""
