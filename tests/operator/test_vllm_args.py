"""vLLM's command line and environment as the operator renders them (pure, no torch)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from rft.contracts.vllm_args import (
    server_args,
    server_command,
    server_env,
    supported_max_lora_rank,
    training_dtype,
)


def test_server_args_render_lora_settings_with_model_first() -> None:
    args = server_args(
        "/models/base",
        "base",
        host="127.0.0.5",
        port=8123,
        max_loras=4,
        max_lora_rank=16,
        max_model_len=2048,
        enable_lora=True,
    )
    assert args == [
        "/models/base",
        "--served-model-name", "base",
        "--host", "127.0.0.5",
        "--port", "8123",
        "--max-model-len", "2048",
        "--enable-lora",
        "--max-loras", "4",
        "--max-lora-rank", "16",
    ]  # fmt: skip


def test_server_args_without_lora_or_length_omit_those_flags() -> None:
    args = server_args("s3://bucket/models/base", "m", enable_lora=False, max_model_len=None)
    assert args == [
        "s3://bucket/models/base", "--served-model-name", "m", "--host", "0.0.0.0", "--port", "8000"  # noqa: S104
    ]  # fmt: skip


def test_lora_modules_are_rendered_as_name_equals_path() -> None:
    args = server_args("/m", "m", lora_modules={"a": "/adapters/a", "b": "s3://x/b"})
    tail = args[args.index("--lora-modules") + 1 :]
    assert tail == ["a=/adapters/a", "b=s3://x/b"]


@pytest.mark.parametrize(
    ("rank", "expected"), [(1, 1), (2, 8), (8, 8), (17, 32), (64, 64), (300, 320), (512, 512)]
)
def test_max_lora_rank_rounds_up_to_a_value_vllm_accepts(rank: int, expected: int) -> None:
    assert supported_max_lora_rank(rank) == expected
    args = server_args("/m", "m", max_lora_rank=rank)
    assert args[args.index("--max-lora-rank") + 1] == str(expected)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"port": 0}, "port"),
        ({"max_loras": 0}, "max_loras"),
        ({"max_lora_rank": 0}, "max_lora_rank"),
        ({"max_lora_rank": 513}, "max_lora_rank"),
        ({"max_model_len": 0}, "max_model_len"),
        ({"enable_lora": False, "lora_modules": {"a": "/a"}}, "lora_modules"),
        ({"lora_modules": {"a=b": "/a"}}, "lora_modules"),
        ({"dtype": "float64"}, "dtype"),
    ],
)
def test_bad_values_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        server_args("/m", "m", **kwargs)  # type: ignore[arg-type]


def test_env_switches_the_admin_routes() -> None:
    assert server_env(enable_lora=True) == {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    assert server_env(enable_lora=False) == {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "False"}
    assert server_env(allow_runtime_lora_updating=False) == {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "False"}
    assert server_env(cpu_threads=2) == {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "OMP_NUM_THREADS": "2"}
    with pytest.raises(ValueError, match="cpu_threads"):
        server_env(cpu_threads=0)


def test_the_command_is_vllm_serve() -> None:
    args = server_args("/m", "m")
    assert server_command(args) == ["vllm", "serve", *args]


def test_the_serving_builders_load_nothing_heavy() -> None:
    """The operator image has no torch, transformers or fastapi."""
    code = (
        "import sys, rft_operator.builders.serving\n"
        "heavy = ('torch', 'transformers', 'peft', 'fastapi', 'uvicorn')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == ""


def test_dtype_is_passed_to_the_engine() -> None:
    args = server_args("/m", "m", dtype="float32")
    assert args[args.index("--dtype") + 1] == "float32"
    assert "--dtype" not in server_args("/m", "m")


def test_servers_run_in_the_trainers_dtype() -> None:
    """training_dtype (which the operator gives servers) is what the trainer computes in."""
    import torch  # noqa: PLC0415 - the trainer's side of the contract
    from rft_trainer.model import _dtype_for  # noqa: PLC0415

    assert getattr(torch, training_dtype("CPU")) == _dtype_for(torch.device("cpu"))
    assert training_dtype("NVIDIA_H100_80GB") == "bfloat16"
