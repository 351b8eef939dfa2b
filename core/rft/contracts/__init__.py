"""The pod contracts: what the operator and the programs it runs in pods agree on, side by side.

Each module is imported by both sides (the operator builds the pod and reads what it reports; the
pod program reads its input and writes its report), so neither keeps a copy:

- `trainer_config`: the trainer's config (`RFT_TRAINER_CONFIG`), progress and result.
- `validation_summary`: the dataset validator's summary, its error kinds and their reasons.
- `model_check`: the base model check's summary and the pinned files' environment.
- `vllm_args`: the server pods' command line and environment (vLLM, and the tests' fake vLLM).
- `exit_codes`: what a pod's exit code means (fail at once, or retry).
- `entrypoints`: the module each pod runs (`python -m <module>`).

Nothing here imports the operator, the trainer, torch or Kubernetes clients.
"""
