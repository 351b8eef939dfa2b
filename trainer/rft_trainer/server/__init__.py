"""The reference inference server: an OpenAI-compatible, multi-LoRA server for CPU and small models.

It speaks the protocol of vLLM's OpenAI server (same routes, same adapter admin routes, same
command-line arguments), so the operator drives both engines the same way. Importing this package
is cheap (no torch, no fastapi): the operator imports `rft_trainer.server.args` from it.
Run it with `python -m rft_trainer.server MODEL [options]`.
"""
