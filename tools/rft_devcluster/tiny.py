"""A tiny, randomly initialised chat model built locally: for tests, the demo and benchmarks.

Nothing is downloaded: a byte-level BPE tokenizer is trained on a small built-in text and a
Qwen2-architecture causal LM is initialised from a seed. The result is a normal Hugging Face
directory (config, safetensors weights, tokenizer with a chat template) that every part of the
project loads exactly like a real base model.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Final, TypedDict

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

# ChatML; with `tools`, a system turn lists their schemas, and an assistant turn's tool calls are
# rendered Hermes-style (as Qwen2.5's template does). Plain messages render as plain ChatML.
CHAT_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n"
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}\n\n{% endif %}"
    "# Tools\n<tools>{% for tool in tools %}\n{{ tool | tojson }}{% endfor %}\n</tools><|im_end|>\n"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if not (tools and loop.first and message['role'] == 'system') %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "{% if message['tool_calls'] is defined and message['tool_calls'] %}"
    "{% for call in message['tool_calls'] %}"
    "{% if message['content'] or not loop.first %}\n{% endif %}"
    '<tool_call>\n{"name": "{{ call[\'function\'][\'name\'] }}", '
    '"arguments": {{ call[\'function\'][\'arguments\'] | tojson }}}\n</tool_call>'
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_WORDS = (  # noqa: SIM905 - a word list reads better as text
    "the a an of to and in is it you that he was for on are with as his they be at one have this "
    "from or had by hot word but what some we can out other were all there when up use your how "
    "said each she which do their time if will way about many then them write would like so these "
    "her long make thing see him two has look more day could go come did number sound no most "
    "people my over know water than call first who may down side been now find yes maybe good bad "
    "red blue green apple banana cherry cat dog bird fish one two three four five six seven eight "
    "nine ten hello world answer question please thanks system user assistant"
).split()


def corpus(lines: int = 400) -> list[str]:
    """A deterministic small text for the tokenizer: words, digits, punctuation, chat markup."""
    out = []
    for i in range(lines):
        words = [_WORDS[(i * 7 + j * 13) % len(_WORDS)] for j in range(12)]
        out.append(" ".join(words) + f". {i} {i * 37 % 1000}! ? , ; : ' \" ( ) - + = /")
    return out


def build_tokenizer(vocab_size: int = 512, texts: Sequence[str] | None = None) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with the chat special tokens and a ChatML template, trained on
    `texts` (default: the built-in `corpus()`)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus() if texts is None else texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        eos_token="<|im_end|>",  # noqa: S106 - a token, not a password
        pad_token="<|endoftext|>",  # noqa: S106
        bos_token=None,
        unk_token=None,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def vocabulary_words() -> list[str]:
    """The words of the built-in text, once each, in first-seen order."""
    return list(dict.fromkeys(_WORDS))


def word_token_ids(tokenizer: PreTrainedTokenizerFast) -> list[int]:
    """The ids of the tokens that are a whole built-in word with its leading space (" cat")."""
    ids = {tokenizer.convert_tokens_to_ids("Ġ" + word) for word in vocabulary_words()}
    return sorted(i for i in ids if isinstance(i, int) and i != tokenizer.unk_token_id)


# A tiny shape that vLLM serves on CPU: its CPU attention refuses head sizes such as 16 (the
# default shape's 64 / 4 heads) and accepts 64 (128 / 2 heads, one KV head).
class ModelShape(TypedDict):
    """The size arguments of `build_tiny_model`."""

    hidden_size: int
    heads: int
    kv_heads: int
    intermediate_size: int


VLLM_CPU_SHAPE: Final = ModelShape(hidden_size=128, heads=2, kv_heads=1, intermediate_size=256)


def build_tiny_model(
    out_dir: str | Path,
    *,
    vocab_size: int = 512,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 2048,
    seed: int = 0,
    head_init_std: float | None = None,
    words_only: bool = False,
) -> Path:
    """Write a tiny Qwen2-architecture chat model to `out_dir` and return the path.

    With the default initialisation (std 0.02, tied embeddings) the next-token distribution is
    almost uniform and nearly fixed: the final RMS norm bounds the hidden state's length, so a
    LoRA adapter on the block linears can move a token's logit by about one unit at most and no
    reward can be learned. `head_init_std` (e.g. 0.2) unties the output head and initialises it
    wider: the random model then has a moderately peaked distribution that an adapter can steer,
    which is what reinforcement-learning tests and demos need.

    `words_only` makes the model speak in whole words, as a pretrained model speaks valid text:
    every token that is not a built-in word with its leading space (`word_token_ids`: " cat",
    " the", ...) gets a logit about 30 below the others, the end-of-turn token included, so
    samples run to `max_tokens`. Completions then come back from an OpenAI-style server as text
    that re-tokenizes to exactly the sampled tokens. A random model's free samples are byte soups
    instead: lone bytes of multi-byte characters come back as U+FFFD and sub-word tokens merge
    when the text is tokenized again, so a trainer (which only sees the text) would train on
    tokens the policy never sampled and a reward on the text would mostly count replacement
    characters. The penalty is a bias carried by a constant hidden channel (dimension 0 of the
    residual stream: the same large value in every token embedding, never written by the blocks),
    which the final RMS norm turns into a steady feature the output head weighs against the non-word
    tokens; adapters wear it down only slowly (after three demo steps at most a few completions in a
    hundred hold a non-word token, in the seeds tried). Because that constant
    dominates every RMS norm, the norms no longer cap how far an adapter moves the output, so this
    model is steerable with the usual head initialisation too: it starts almost uniform over the
    words and learns a reward smoothly (`make demo` uses it: `words_only=True`, no `head_init_std`;
    with both it is steered so easily that a learning rate of 2e-2 collapses it onto one word).
    Implies an untied output head (std `head_init_std`, else the usual 0.02).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(vocab_size)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=head_init_std is None and not words_only,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    if head_init_std is not None:
        with torch.no_grad():
            model.lm_head.weight.normal_(mean=0.0, std=head_init_std)
    if words_only:
        _bias_against_non_words(model, word_token_ids(tokenizer))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _bias_against_non_words(model: Qwen2ForCausalLM, allowed: list[int], penalty: float = 30.0) -> None:
    """Give every token outside `allowed` a logit about `penalty` below the rest (see `words_only`).

    Dimension 0 of the residual stream becomes a constant far larger than the other dimensions
    (which keep the initialiser's scale): every token embedding holds it and no block writes to it
    (rows 0 of o_proj and down_proj are zero). It then dominates every RMS norm, so after a norm it
    reads about 1 at every position however the other dimensions (and adapters) move, and the
    output head turns it into the penalty. The norms' other weights are scaled up so that blocks
    and head see the other dimensions at the size they would without the constant.
    """
    dims = model.config.hidden_size
    typical = model.config.initializer_range  # the other dimensions' size in the embeddings
    constant = 1.0
    rms = math.sqrt((constant**2 + (dims - 1) * typical**2) / dims)  # an embedding's RMS with the constant
    norm_weight = torch.full((dims,), rms / typical)
    norm_weight[0] = rms / constant
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] = constant
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[0, :] = 0.0
            layer.mlp.down_proj.weight[0, :] = 0.0
            layer.input_layernorm.weight.copy_(norm_weight)
            layer.post_attention_layernorm.weight.copy_(norm_weight)
        model.model.norm.weight.copy_(norm_weight)
        column = torch.full((model.config.vocab_size,), -penalty)
        column[allowed] = 0.0
        model.lm_head.weight[:, 0] = column


def main() -> None:
    parser = argparse.ArgumentParser(description="Build a tiny random chat model directory.")
    parser.add_argument("out_dir")
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vocab-size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--head-init-std",
        type=float,
        default=None,
        help="Untie the output head and initialise it with this std (e.g. 0.2) so that rewards can be learned.",
    )
    parser.add_argument(
        "--words-only",
        action="store_true",
        help="Make the model sample only whole built-in words, so its text re-tokenizes to the sampled tokens.",
    )
    args = parser.parse_args()
    path = build_tiny_model(
        args.out_dir,
        hidden_size=args.hidden_size,
        layers=args.layers,
        vocab_size=args.vocab_size,
        seed=args.seed,
        head_init_std=args.head_init_std,
        words_only=args.words_only,
    )
    print(path)


if __name__ == "__main__":
    main()
