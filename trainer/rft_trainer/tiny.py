"""A tiny, randomly initialised chat model built locally: for tests, the demo and benchmarks.

Nothing is downloaded: a byte-level BPE tokenizer is trained on a small built-in text and a
Qwen2-architecture causal LM is initialised from a seed. The result is a normal Hugging Face
directory (config, safetensors weights, tokenizer with a chat template) that every part of the
project loads exactly like a real base model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
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


def build_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with the chat special tokens and a ChatML template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
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
) -> Path:
    """Write a tiny Qwen2-architecture chat model to `out_dir` and return the path.

    With the default initialisation (std 0.02, tied embeddings) the next-token distribution is
    almost uniform and nearly fixed: the final RMS norm bounds the hidden state's length, so a
    LoRA adapter on the block linears can move a token's logit by about one unit at most and no
    reward can be learned. `head_init_std` (e.g. 0.2) unties the output head and initialises it
    wider: the random model then has a moderately peaked distribution that an adapter can steer,
    which is what reinforcement-learning tests and demos need.
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
        tie_word_embeddings=head_init_std is None,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    if head_init_std is not None:
        with torch.no_grad():
            model.lm_head.weight.normal_(mean=0.0, std=head_init_std)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


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
    args = parser.parse_args()
    path = build_tiny_model(
        args.out_dir,
        hidden_size=args.hidden_size,
        layers=args.layers,
        vocab_size=args.vocab_size,
        seed=args.seed,
        head_init_std=args.head_init_std,
    )
    print(path)


if __name__ == "__main__":
    main()
