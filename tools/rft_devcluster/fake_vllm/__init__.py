"""A fake of vLLM's OpenAI server, for fast tests: dev tooling, not a product engine.

The product serves with vLLM only, and the tests that are about serving run real vLLM
(`tests/vllm/`, `tests/operator/test_serving_vllm.py`, `make demo`). This fake exists because
many other tests need *a* server that loads LoRA adapters and answers chat completions with
logprobs: the operator's adapter distribution, the SDK against a cluster, the end-to-end loop.
On this project's 2-core CI machines a real vLLM pod takes about a minute to become ready and
uses several GiB; the fake is ready in seconds, so those tests stay fast and each can have its
own server.

It is a fake in the test-double sense: a working implementation (transformers + PEFT, one
request at a time) that takes vLLM's command line (`vllm serve MODEL --served-model-name ...
--enable-lora ...`), serves vLLM's routes (`/v1/chat/completions`, `/v1/completions`,
`/v1/models`, `/health`, `/v1/load_lora_adapter`, `/v1/unload_lora_adapter` behind
`VLLM_ALLOW_RUNTIME_LORA_UPDATING`) and errors. On the local node, the image `rft-fake-vllm`
runs the operator's unchanged vLLM container command with it (`rft_devcluster.localnode.images`):
a test selects it with the Deployment's `image` field. Where it differs from vLLM is listed in
docs/serving.md. Importing this package is cheap (no torch, no fastapi).

Run it by hand with `python -m rft_devcluster.fake_vllm MODEL [options]`.
"""
