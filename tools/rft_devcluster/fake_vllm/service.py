"""What each route does, as plain functions of the engine and the JSON body (no HTTP here).

Every function blocks (tokenising, waiting for the model) and is meant to run in a worker thread.
A generation request is prepared first (parsed, validated, tokenised: every 4xx is raised there),
then answered whole (`run_*`) or as a stream of chunks (`stream_*`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rft_devcluster.fake_vllm import responses, streaming
from rft_devcluster.fake_vllm.engine import Engine
from rft_devcluster.fake_vllm.generation import Completion, TokenEvent
from rft_devcluster.fake_vllm.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    LoadLoRAAdapterRequest,
    UnloadLoRAAdapterRequest,
    parse_request,
)
from rft_devcluster.fake_vllm.sampling import SamplingParams

Emit = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class PreparedChat:
    """A valid chat request, its prompt tokens and sampling parameters."""

    request: ChatCompletionRequest
    model: str
    prompt_ids: list[int]
    params: SamplingParams


@dataclass(frozen=True)
class PreparedCompletion:
    """A valid completion request: its prompts' tokens and each prompt's sampling parameters."""

    request: CompletionRequest
    model: str
    prompts: list[list[int]]
    params: list[SamplingParams]


def prepare_chat(engine: Engine, body: object) -> PreparedChat:
    """Parse and check a /v1/chat/completions body; raises ApiError for anything wrong."""
    request = parse_request(ChatCompletionRequest, body)
    request.check_supported()
    model = request.model or engine.model_name  # vLLM serves the base model when none is named
    engine.resolve_model(model)
    if request.stop_token_ids:
        engine.check_token_ids(request.stop_token_ids, "stop_token_ids")
    prompt_ids = engine.chat_prompt_ids(
        request.template_messages(),
        add_generation_prompt=request.add_generation_prompt,
        continue_final_message=request.continue_final_message,
    )
    max_tokens = engine.fit_max_tokens(len(prompt_ids), request.requested_max_tokens(), "messages")
    return PreparedChat(
        request, model, prompt_ids, request.sampling_params(max_tokens, engine.sampling_defaults)
    )


def prepare_completion(engine: Engine, body: object) -> PreparedCompletion:
    """Parse and check a /v1/completions body; raises ApiError for anything wrong, before any
    prompt of a batch is generated."""
    request = parse_request(CompletionRequest, body)
    request.check_supported()
    model = request.model or engine.model_name
    engine.resolve_model(model)
    if request.stop_token_ids:
        engine.check_token_ids(request.stop_token_ids, "stop_token_ids")
    prompts: list[list[int]] = []
    for prompt in request.prompts():
        if isinstance(prompt, str):
            prompts.append(engine.text_prompt_ids(prompt))
        else:
            engine.check_token_ids(prompt, "prompt")
            prompts.append(prompt)
    params = [
        request.sampling_params(
            engine.fit_max_tokens(len(ids), request.requested_max_tokens(), "prompt"),
            engine.sampling_defaults,
        )
        for ids in prompts
    ]
    return PreparedCompletion(request, model, prompts, params)


def run_chat(engine: Engine, prepared: PreparedChat) -> dict[str, Any]:
    """Generate every choice, then answer with one `chat.completion` object."""
    completions = engine.generate(prepared.model, prepared.prompt_ids, prepared.params)
    return responses.chat_completion(
        model=prepared.model,
        prompt_ids=prepared.prompt_ids,
        completions=completions,
        token_text=engine.token_text,
        return_token_ids=prepared.request.return_token_ids,
    )


def run_completion(engine: Engine, prepared: PreparedCompletion) -> dict[str, Any]:
    """Generate every prompt's choices, then answer with one `text_completion` object."""
    completions: list[list[Completion]] = [
        engine.generate(prepared.model, prompt_ids, params)
        for prompt_ids, params in zip(prepared.prompts, prepared.params, strict=True)
    ]
    prompt_logprobs = None
    if prepared.request.prompt_logprobs is not None:
        prompt_logprobs = [engine.prompt_logprobs(prepared.model, ids) for ids in prepared.prompts]
    return responses.text_completion(
        model=prepared.model,
        prompts=prepared.prompts,
        completions=completions,
        token_text=engine.token_text,
        return_token_ids=prepared.request.return_token_ids,
        prompt_logprobs=prompt_logprobs,
    )


def chat_completion(engine: Engine, body: object) -> dict[str, Any]:
    """Answer a /v1/chat/completions body whole (`stream` is not looked at)."""
    return run_chat(engine, prepare_chat(engine, body))


def text_completion(engine: Engine, body: object) -> dict[str, Any]:
    """Answer a /v1/completions body whole (`stream` is not looked at)."""
    return run_completion(engine, prepare_completion(engine, body))


def stream_chat(engine: Engine, prepared: PreparedChat, emit: Emit, cancelled: Callable[[], bool]) -> None:
    """Generate the choices, emitting `chat.completion.chunk` objects as tokens arrive."""
    request = prepared.request
    chunks = streaming.ChatChunks(
        model=prepared.model,
        n=prepared.params.n,
        stop=prepared.params.stop,
        token_text=engine.token_text,
        logprobs=prepared.params.logprobs is not None,
        return_token_ids=request.return_token_ids,
    )
    for chunk in chunks.opening(prepared.prompt_ids):
        emit(chunk)
    completions = engine.generate(
        prepared.model,
        prepared.prompt_ids,
        prepared.params,
        on_token=_relay(chunks.token, emit),
        cancelled=cancelled,
    )
    if request.include_usage:
        emit(chunks.usage(responses.usage(len(prepared.prompt_ids), completions)))


def stream_completion(
    engine: Engine, prepared: PreparedCompletion, emit: Emit, cancelled: Callable[[], bool]
) -> None:
    """Generate each prompt's choices in turn, emitting `text_completion` chunks as tokens arrive."""
    request = prepared.request
    chunks = streaming.CompletionChunks(
        model=prepared.model, token_text=engine.token_text, return_token_ids=request.return_token_ids
    )
    every: list[Completion] = []
    for number, (prompt_ids, params) in enumerate(zip(prepared.prompts, prepared.params, strict=True)):
        stream = chunks.prompt(
            first_index=number * params.n, n=params.n, stop=params.stop, prompt_ids=prompt_ids
        )
        every += engine.generate(
            prepared.model, prompt_ids, params, on_token=_relay(stream, emit), cancelled=cancelled
        )
    if request.include_usage:
        emit(chunks.usage(responses.usage(sum(len(ids) for ids in prepared.prompts), every)))


def _relay(build: Callable[[TokenEvent], dict[str, Any]], emit: Emit) -> Callable[[TokenEvent], None]:
    def relay(event: TokenEvent) -> None:
        emit(build(event))

    return relay


def load_lora_adapter(engine: Engine, body: object) -> str:
    """Load the adapter a /v1/load_lora_adapter body names; returns vLLM's success text."""
    request = parse_request(LoadLoRAAdapterRequest, body)
    engine.load_adapter(request.lora_name, request.lora_path, in_place=request.load_inplace)
    return f"Success: LoRA adapter '{request.lora_name}' added successfully."


def unload_lora_adapter(engine: Engine, body: object) -> str:
    """Unload the adapter a /v1/unload_lora_adapter body names; returns vLLM's success text."""
    request = parse_request(UnloadLoRAAdapterRequest, body)
    engine.unload_adapter(request.lora_name)
    return f"Success: LoRA adapter '{request.lora_name}' removed successfully."
