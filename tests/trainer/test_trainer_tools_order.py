"""A row's `tools` reach the trainer's chat template in the order the sampler rendered them.

Found by tests/demo/test_agent_loop.py: `Dataset.sync` uploaded canonical JSON with every key
sorted (`rft.sdk.jsonl.canonical_line`), which reordered each tool schema's keys, while vLLM renders
the request's tools in the caller's order. Chat templates print the schemas with `tojson`, which
keeps key order, so the trainer trained every trajectory of a row with tools in a system prompt the
sampler never saw (on the demo's tiny model the base model's logprobs of the sampled tokens differed
from the sampler's by 0.026 on average, 0.12 at most, instead of 1e-6). Canonical lines now keep the
order inside `tools`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from rft.rows import parse_row
from rft.sdk.jsonl import canonical_line
from rft_devcluster.tiny import build_tokenizer
from rft_trainer.data import SampleTokenizer

TOOLS: list[dict[Any, Any] | Callable[..., Any]] = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a word up in the glossary.",
            "parameters": {
                "type": "object",
                "properties": {"word": {"type": "string"}},
                "required": ["word"],
            },
        },
    }
]
MESSAGES = [{"role": "user", "content": "Look up a word."}]
ROW = {
    "tools": TOOLS,
    "samples": [
        {"messages": [*MESSAGES, {"role": "assistant", "content": "cat"}], "evals": {"score": s}}
        for s in (0.0, 1.0)
    ],
}


def test_the_synced_rows_tools_render_as_the_server_rendered_them() -> None:
    tokenizer = build_tokenizer()
    # what vLLM feeds the model: the request's tools, in OpenAI's field order
    served = tokenizer.apply_chat_template(MESSAGES, tools=TOOLS, tokenize=False, add_generation_prompt=True)
    synced = parse_row(1, canonical_line(json.loads(json.dumps(ROW))))
    assert synced.tools is not None
    trainer = SampleTokenizer(tokenizer, 512).render(
        MESSAGES, 1, generation_prompt=True, tools=list(synced.tools)
    )
    assert trainer == served


def test_canonical_lines_sort_every_key_but_the_tools_own() -> None:
    shuffled = {
        "samples": [{"evals": {"score": 1.0}, "messages": [{"content": "cat", "role": "assistant"}]}],
        "tools": TOOLS,
    }
    line = canonical_line(json.loads(json.dumps(shuffled)))
    # the same content id whatever the order of the row's own keys...
    assert line == canonical_line(dict(reversed(list(shuffled.items()))))
    assert line.index('"samples"') < line.index('"tools"')
    assert line.index('"messages"') > line.index('"evals"')
    assert line.index('"role"') > line.index('"content"')
    # ...but a tool schema keeps its order: it is what the template prints
    assert '{"type":"function","function":{"name":"lookup","description"' in line
