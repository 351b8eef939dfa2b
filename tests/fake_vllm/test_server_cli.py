"""The command line: vLLM's argument names, the runtime-updating switch, and a real server process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest
from rft.contracts.vllm_args import server_args, server_env
from rft_devcluster.fake_vllm.cli import parse_config, parse_lora_module
from rft_devcluster.fake_vllm.config import LoraModule
from rft_devcluster.fake_vllm.testing import LOOPBACK, free_port, server_process


def test_vllm_style_arguments_parse_into_the_config() -> None:
    config = parse_config(
        [
            "/models/base",
            "--served-model-name", "base", "alias",
            "--host", "127.0.0.9",
            "--port", "9001",
            "--enable-lora",
            "--max-loras", "4",
            "--max-lora-rank", "32",
            "--max-model-len", "512",
            "--lora-modules", "a=/adapters/a", '{"name": "b", "path": "s3://bucket/b"}',
            "--logprobs-mode", "processed_logprobs",
        ],
        environ={},
    )  # fmt: skip
    assert config.model == "/models/base"
    assert config.model_names == ("base", "alias")
    assert (config.host, config.port) == ("127.0.0.9", 9001)
    assert config.enable_lora
    assert (config.max_loras, config.max_lora_rank, config.max_model_len) == (4, 32, 512)
    assert config.lora_modules == (LoraModule("a", "/adapters/a"), LoraModule("b", "s3://bucket/b"))
    assert config.logprobs_mode == "processed_logprobs"
    assert not config.allow_runtime_lora_updating


def test_the_shared_args_parse_the_same_way_for_the_reference_server() -> None:
    args = server_args(
        "s3://bucket/models/base", "base", host="127.0.0.3", port=8123, max_loras=3, max_lora_rank=20,
        max_model_len=1024, enable_lora=True,
    )  # fmt: skip
    config = parse_config(args, environ=server_env(enable_lora=True))
    assert config.model == "s3://bucket/models/base"
    assert config.model_names == ("base",)
    assert (config.host, config.port, config.max_loras, config.max_lora_rank) == ("127.0.0.3", 8123, 3, 32)
    assert config.max_model_len == 1024
    assert config.enable_lora
    assert config.allow_runtime_lora_updating


@pytest.mark.parametrize(
    ("environ", "flag", "expected"),
    [
        ({}, [], False),
        ({"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}, [], True),
        ({"VLLM_ALLOW_RUNTIME_LORA_UPDATING": " 1 "}, [], True),
        ({"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "yes"}, [], False),
        ({"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "true"}, ["--no-runtime-lora-updating"], False),
        ({}, ["--runtime-lora-updating"], True),
    ],
)
def test_runtime_lora_updating_follows_vllms_variable_unless_a_flag_says(
    environ: dict[str, str], flag: list[str], expected: bool
) -> None:
    config = parse_config(["/m", "--enable-lora", *flag], environ=environ)
    assert config.allow_runtime_lora_updating is expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "a model is required"),
        (["/m", "--model", "/other"], "differ"),
        (["/m", "--max-loras", "0"], "max_loras"),
        (["/m", "--lora-modules", "a=/x"], "needs enable_lora"),
        (["/m", "--enable-lora", "--lora-modules", "no-equals"], "must be name=path"),
        (["/m", "--enable-lora", "--max-loras", "1", "--lora-modules", "a=/x", "b=/y"], "exceed max_loras"),
        (["/m", "--dtype", "int4"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_with_a_usage_error(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        parse_config(argv, environ={})
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


def test_lora_module_json_needs_name_and_path() -> None:
    with pytest.raises(ValueError, match="needs non-empty 'name' and 'path'"):
        parse_lora_module('{"name": "a"}')


def test_help_is_quick_and_loads_no_model() -> None:
    code = "import sys; from rft_devcluster.fake_vllm.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "False"


@pytest.mark.slow  # a fresh interpreter imports torch, transformers and peft: 6-20 s on a busy machine
def test_the_server_runs_as_a_process_with_the_shared_args(
    tiny_model_dir: Path, adapter_dirs: dict[str, Path], tmp_path: Path
) -> None:
    port = free_port()
    args = server_args(
        str(tiny_model_dir), "tiny", host=LOOPBACK, port=port, max_loras=2, max_lora_rank=8, max_model_len=256,
        enable_lora=True, lora_modules={"a": str(adapter_dirs["a"])},
    )  # fmt: skip
    base_url = f"http://{LOOPBACK}:{port}"
    log = tmp_path / "server.log"
    with server_process(
        [*args, "--uvicorn-log-level", "warning"],
        env=server_env(cpu_threads=1),
        base_url=base_url,
        log_path=log,
    ):
        client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
        assert [model.id for model in client.models.list().data] == ["tiny", "a"]
        loaded = httpx.post(
            f"{base_url}/v1/load_lora_adapter", json={"lora_name": "b", "lora_path": str(adapter_dirs["b"])}
        )
        assert loaded.status_code == 200
        replies = {
            model: client.completions.create(model=model, prompt="hello", max_tokens=6, temperature=0)
            .choices[0]
            .text
            for model in ("tiny", "a", "b")
        }
        assert len(set(replies.values())) == 3
    assert "Loaded new LoRA adapter: name 'b'" in log.read_text()
