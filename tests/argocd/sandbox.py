"""Argo CD's health-script sandbox, as far as Lua can tell: Lua 5.1 with only the base and table
libraries (plus Argo CD's `package` and its "safe" os: time, date, clock), no string or math
library and no string methods; the object in the global `obj`; the chunk's return value is the
health. Mirrors argo-cd util/lua/lua.go (gopher-lua with SkipOpenLibs, then OpenPackage,
OpenBase, OpenTable and OpenSafeOs) and its isValidHealthStatusCode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lupa import lua51

REPO = Path(__file__).resolve().parents[2]
HEALTH_DIR = REPO / "argocd" / "health"
KINDS = {
    "Dataset": "dataset",
    "Deployment": "deployment",
    "Model": "model",
    "ReinforcementStep": "reinforcementstep",
    "TrainingSession": "trainingsession",
}
VALID = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}

# What luaL_openlibs gives and Argo CD does not: removed before the script runs. The string
# metatable goes too, so that ("x"):upper() fails as it does in gopher-lua without the string
# library.
_SANDBOX = """
local safe_os = { time = os.time, date = os.date, clock = os.clock }
debug.setmetatable("", nil)
string = nil
math = nil
io = nil
debug = nil
coroutine = nil
python = nil
os = safe_os
package.loaded.string = nil
package.loaded.math = nil
package.loaded.io = nil
package.loaded.debug = nil
package.loaded.coroutine = nil
package.loaded.os = safe_os
"""


class HealthScriptError(RuntimeError):
    """The script raised, or returned something Argo CD rejects."""


def runtime() -> Any:
    lua = lua51.LuaRuntime(register_eval=False, register_builtins=False, unpack_returned_tuples=True)
    lua.execute(_SANDBOX)
    return lua


def script(kind: str) -> str:
    return (HEALTH_DIR / f"{KINDS[kind]}.lua").read_text()


def _to_lua(lua: Any, value: Any) -> Any:
    """JSON-shaped Python data as gopher-lua's decodeValue builds it (null: absent)."""
    if isinstance(value, dict):
        table = lua.table()
        for key, item in value.items():
            if item is not None:
                table[key] = _to_lua(lua, item)
        return table
    if isinstance(value, list):
        table = lua.table()
        for index, item in enumerate(value, start=1):
            table[index] = _to_lua(lua, item)
        return table
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    raise TypeError(f"not JSON data: {type(value).__name__}")


def health(obj: dict[str, Any], source: str | None = None) -> dict[str, str]:
    """Run the health script of obj's kind (or `source`) on obj, as Argo CD does."""
    lua = runtime()
    lua.globals().obj = _to_lua(lua, obj)
    try:
        result = lua.execute(source if source is not None else script(obj["kind"]))
    except lua51.LuaError as exc:
        raise HealthScriptError(str(exc)) from exc
    if lua.eval("type")(result) != "table":
        raise HealthScriptError(f"expect table output from Lua script, not {lua.eval('type')(result)}")
    status = result["status"]
    message = result["message"]
    if status not in VALID:
        return {"status": "Unknown", "message": "Lua returned an invalid health status"}
    return {"status": status, "message": message or ""}
