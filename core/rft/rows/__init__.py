"""The dataset row format: parsing JSONL rows into prompt groups, combining rewards, validation.

See docs/dataset-format.md for both formats, the limits and example errors.
"""

from rft.rows.model import Completion, Message, PromptGroup, RowError, SamplingParams, ToolCall, TurnTokens
from rft.rows.parse import (
    DEFAULT_MAX_LINE_BYTES,
    FORMATS,
    ROLES,
    SCALAR_REWARD_KEY,
    iter_groups,
    parse_row,
    scan_rows,
)
from rft.rows.report import (
    DEFAULT_MAX_ERRORS,
    DEFAULT_MAX_ROWS,
    DEFAULT_MIN_ROWS,
    ValidationReport,
    validate_bytes,
    validate_lines,
    validate_stream,
)
from rft.rows.rewards import RewardError, combine_rewards

__all__ = [
    "DEFAULT_MAX_ERRORS",
    "DEFAULT_MAX_LINE_BYTES",
    "DEFAULT_MAX_ROWS",
    "DEFAULT_MIN_ROWS",
    "FORMATS",
    "ROLES",
    "SCALAR_REWARD_KEY",
    "Completion",
    "Message",
    "PromptGroup",
    "RewardError",
    "RowError",
    "SamplingParams",
    "ToolCall",
    "TurnTokens",
    "ValidationReport",
    "combine_rewards",
    "iter_groups",
    "parse_row",
    "scan_rows",
    "validate_bytes",
    "validate_lines",
    "validate_stream",
]
