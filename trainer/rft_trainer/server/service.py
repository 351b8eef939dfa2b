"""What each route does, as plain functions of the engine and the JSON body (no HTTP here).

They block (tokenising, waiting for the model) and are meant to run in a worker thread.
"""

from __future__ import annotations

from typing import Any

from rft_trainer.server import responses
from rft_trainer.server.engine import Engine
from rft_trainer.server.generation import Completion
from rft_trainer.server.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    LoadLoRAAdapterRequest,
    UnloadLoRAAdapterRequest,
    parse_request,
)


def chat_completion(engine: Engine, body: object) -> dict[str, Any]:
    """Answer a /v1/chat/completions body with a `chat.completion` object (or raise ApiError)."""
    request = parse_request(ChatCompletionRequest, body)
    request.check_supported()
    engine.resolve_model(request.model)
    if request.stop_token_ids:
        engine.check_token_ids(request.stop_token_ids, "stop_token_ids")
    prompt_ids = engine.chat_prompt_ids(
        request.template_messages(),
        add_generation_prompt=request.add_generation_prompt,
        continue_final_message=request.continue_final_message,
    )
    max_tokens = engine.fit_max_tokens(len(prompt_ids), request.requested_max_tokens(), "messages")
    params = request.sampling_params(max_tokens, engine.sampling_defaults)
    completions = engine.generate(request.model, prompt_ids, params)
    return responses.chat_completion(
        model=request.model,
        prompt_ids=prompt_ids,
        completions=completions,
        token_text=engine.token_text,
        return_token_ids=request.return_token_ids,
    )


def text_completion(engine: Engine, body: object) -> dict[str, Any]:
    """Answer a /v1/completions body with a `text_completion` object (or raise ApiError)."""
    request = parse_request(CompletionRequest, body)
    request.check_supported()
    engine.resolve_model(request.model)
    if request.stop_token_ids:
        engine.check_token_ids(request.stop_token_ids, "stop_token_ids")
    prompts: list[list[int]] = []
    for prompt in request.prompts():
        if isinstance(prompt, str):
            prompts.append(engine.text_prompt_ids(prompt))
        else:
            engine.check_token_ids(prompt, "prompt")
            prompts.append(prompt)
    # Check every prompt before generating anything, so a bad batch costs nothing.
    limits = [engine.fit_max_tokens(len(ids), request.requested_max_tokens(), "prompt") for ids in prompts]
    completions: list[list[Completion]] = []
    for prompt_ids, max_tokens in zip(prompts, limits, strict=True):
        params = request.sampling_params(max_tokens, engine.sampling_defaults)
        completions.append(engine.generate(request.model, prompt_ids, params))
    return responses.text_completion(
        model=request.model,
        prompts=prompts,
        completions=completions,
        token_text=engine.token_text,
        return_token_ids=request.return_token_ids,
    )


def load_lora_adapter(engine: Engine, body: object) -> str:
    """Load the adapter a /v1/load_lora_adapter body names; returns vLLM's success text."""
    request = parse_request(LoadLoRAAdapterRequest, body)
    engine.load_adapter(request.lora_name, request.lora_path)
    return f"Success: LoRA adapter '{request.lora_name}' added successfully."


def unload_lora_adapter(engine: Engine, body: object) -> str:
    """Unload the adapter a /v1/unload_lora_adapter body names; returns vLLM's success text."""
    request = parse_request(UnloadLoRAAdapterRequest, body)
    engine.unload_adapter(request.lora_name)
    return f"Success: LoRA adapter '{request.lora_name}' removed successfully."
