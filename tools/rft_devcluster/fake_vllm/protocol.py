"""Request bodies of the OpenAI routes and vLLM's adapter routes, validated with clear 400s.

Fields follow the OpenAI API plus the vLLM extras the project uses (`top_k`, `stop_token_ids`,
`ignore_eos`, `skip_special_tokens`, `return_token_ids`). Parameters this server cannot honour
are refused with a 400 naming them rather than silently ignored; unknown fields are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from rft_devcluster.fake_vllm.errors import ApiError, bad_request
from rft_devcluster.fake_vllm.sampling import SamplingParams

MAX_LOGPROBS = 20  # vLLM's default --max-logprobs
MAX_N = 128
_SEED_MIN, _SEED_MAX = -(2**63), 2**64 - 1

RequestT = TypeVar("RequestT", bound=BaseModel)


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Body):
    """OpenAI's `stream_options`."""

    include_usage: bool = False


class _GenerationRequest(_Body):
    """Fields shared by chat and text completions."""

    model: StrictStr | None = None
    n: int = Field(default=1, ge=1, le=MAX_N)
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=-1)
    max_tokens: int | None = Field(default=None, ge=1)
    stop: StrictStr | list[StrictStr] | None = None
    stop_token_ids: list[StrictInt] | None = None
    seed: int | None = Field(default=None, ge=_SEED_MIN, le=_SEED_MAX)
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    stream: bool = False
    stream_options: StreamOptions | None = None
    return_token_ids: bool = False
    best_of: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    min_p: float | None = None

    def stop_strings(self) -> tuple[str, ...]:
        """The stop sequences as a tuple (a single string counts as one)."""
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def check_supported(self) -> None:
        """400 naming the first parameter this server cannot honour."""
        if any(not stop for stop in self.stop_strings()):
            raise bad_request("stop: stop sequences must not be empty strings", "stop")
        if self.stream_options is not None and not self.stream:
            raise bad_request("stream_options: can only be given when `stream=True`", "stream_options")
        if self.best_of is not None and self.best_of != self.n:
            raise bad_request("best_of: only best_of equal to n is supported", "best_of")
        for name in ("presence_penalty", "frequency_penalty", "min_p"):
            if getattr(self, name) not in (None, 0, 0.0):
                raise bad_request(f"{name}: not supported by the fake vLLM (use 0)", name)
        if self.repetition_penalty not in (None, 1, 1.0):
            raise bad_request(
                "repetition_penalty: not supported by the fake vLLM (use 1)", "repetition_penalty"
            )
        if self.logit_bias:
            raise bad_request("logit_bias: not supported by the fake vLLM", "logit_bias")

    def requested_max_tokens(self) -> int | None:
        """The completion length the client asked for, if any."""
        return self.max_tokens

    @property
    def include_usage(self) -> bool:
        """Whether a stream ends with a chunk carrying `usage`."""
        return self.stream_options is not None and self.stream_options.include_usage

    def logprobs_count(self) -> int | None:
        """None for no logprobs, else how many alternatives to report per token; each request
        kind reads it from its own fields (chat: logprobs + top_logprobs, completions: logprobs)."""
        raise NotImplementedError

    def sampling_params(self, max_tokens: int, defaults: Mapping[str, float | int]) -> SamplingParams:
        """The sampling parameters of this request; unset ones come from the model's `defaults`."""
        return SamplingParams(
            n=self.n,
            max_tokens=max_tokens,
            temperature=float(
                self.temperature if self.temperature is not None else defaults.get("temperature", 1.0)
            ),
            top_p=float(self.top_p if self.top_p is not None else defaults.get("top_p", 1.0)),
            top_k=int(self.top_k if self.top_k is not None else defaults.get("top_k", 0)),
            seed=self.seed,
            stop=self.stop_strings(),
            stop_token_ids=tuple(self.stop_token_ids or ()),
            ignore_eos=self.ignore_eos,
            logprobs=self.logprobs_count(),
            skip_special_tokens=self.skip_special_tokens,
        )


class TextPart(_Body):
    """A text part of a message's content."""

    type: Literal["text"]
    text: StrictStr


class ChatMessage(BaseModel):
    """One chat turn; content may be a string or a list of text parts."""

    model_config = ConfigDict(extra="allow")

    role: Annotated[StrictStr, Field(min_length=1)]
    content: StrictStr | list[TextPart] | None = None
    name: StrictStr | None = None

    def as_template_input(self) -> dict[str, Any]:
        """The message as chat templates expect it: role and plain-text content."""
        if isinstance(self.content, list):
            text = "".join(part.text for part in self.content)
        else:
            text = self.content or ""
        message: dict[str, Any] = {"role": self.role, "content": text}
        if self.name is not None:
            message["name"] = self.name
        return message


class ChatCompletionRequest(_GenerationRequest):
    """POST /v1/chat/completions."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    tools: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None

    def check_supported(self) -> None:
        """400 for options that contradict each other or are not served here."""
        super().check_supported()
        if self.top_logprobs and not self.logprobs:
            raise bad_request(
                "top_logprobs: when using `top_logprobs`, `logprobs` must be set to true", "top_logprobs"
            )
        if self.add_generation_prompt and self.continue_final_message:
            raise bad_request(
                "continue_final_message: cannot be used with add_generation_prompt=true",
                "continue_final_message",
            )
        if self.tools:
            raise bad_request("tools: tool calling is not supported by the fake vLLM", "tools")
        if self.response_format and self.response_format.get("type", "text") != "text":
            raise bad_request("response_format: only 'text' is supported by the fake vLLM", "response_format")

    def requested_max_tokens(self) -> int | None:
        """`max_completion_tokens` wins over the older `max_tokens`."""
        return self.max_completion_tokens or self.max_tokens

    def logprobs_count(self) -> int | None:
        """None unless `logprobs` is true; then `top_logprobs` alternatives (default 0)."""
        return (self.top_logprobs or 0) if self.logprobs else None

    def template_messages(self) -> list[dict[str, Any]]:
        """The conversation as the chat template takes it."""
        return [message.as_template_input() for message in self.messages]


Prompt = StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]


class CompletionRequest(_GenerationRequest):
    """POST /v1/completions."""

    prompt: Prompt
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    # vLLM's: the prompt tokens' logprobs (the operator's adapter canary check). Only 0 here:
    # each prompt token's own logprob, no alternatives.
    prompt_logprobs: int | None = Field(default=None, ge=0)
    echo: bool = False
    suffix: str | None = None

    def check_supported(self) -> None:
        """400 for an empty prompt or options not served here."""
        super().check_supported()
        if self.echo:
            raise bad_request("echo: not supported by the fake vLLM", "echo")
        if self.suffix:
            raise bad_request("suffix: not supported by the fake vLLM", "suffix")
        if self.prompt_logprobs is not None and (self.prompt_logprobs > 0 or self.stream):
            raise bad_request(
                "prompt_logprobs: only 0 (the prompt's own tokens), without stream, is supported by "
                "the fake vLLM",
                "prompt_logprobs",
            )
        prompts = self.prompts()
        if not prompts or any(len(prompt) == 0 for prompt in prompts):
            raise bad_request("prompt: prompts must not be empty", "prompt")

    def logprobs_count(self) -> int | None:
        """The `logprobs` integer: alternatives per token (0 = only the sampled token)."""
        return self.logprobs

    def prompts(self) -> list[str | list[int]]:
        """Each prompt of the batch: a string or a list of token ids."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if prompt and all(isinstance(item, int) for item in prompt):
            return [[int(item) for item in prompt if isinstance(item, int)]]
        return [item for item in prompt if isinstance(item, str | list)]


class LoadLoRAAdapterRequest(_Body):
    """POST /v1/load_lora_adapter (vLLM)."""

    lora_name: StrictStr = ""
    lora_path: StrictStr = ""
    load_inplace: StrictBool = False


class UnloadLoRAAdapterRequest(_Body):
    """POST /v1/unload_lora_adapter (vLLM)."""

    lora_name: StrictStr = ""
    lora_int_id: int | None = None


def parse_request(model: type[RequestT], body: object) -> RequestT:
    """Validate a JSON body into `model`; ApiError 400 naming the first bad field otherwise."""
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    try:
        return model.model_validate(body)
    except ValidationError as error:
        raise validation_error(error) from None


def validation_error(error: ValidationError) -> ApiError:
    """The first problem of a pydantic ValidationError as a 400 naming the field."""
    first = error.errors(include_url=False)[0]
    location = [str(part) for part in first["loc"]]
    # Union members show up as extra location parts ('str', 'list[str]'): keep the field path only.
    param = ".".join(part for part in location if not part.startswith(("str", "list[", "int", "function-")))
    message = first["msg"]
    if first["type"] == "missing":
        message = "field required"
    return bad_request(f"{param or 'body'}: {message}", param or None)
