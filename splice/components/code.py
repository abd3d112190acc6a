"""``code.run``: call a function of customer Python code with the step's arguments."""

from __future__ import annotations

import linecache
import marshal
import sys
import types
from typing import Any

from splice.sdk import ActionContext, ActionError, Component, Input

# The resource under which the child finds the supervisor's compiled code files.
COMPILED_RESOURCE = "code.compiled"

component = Component("code", description="Customer Python code")

# File names under which customer code is compiled, so tracebacks can keep only its frames.
CUSTOMER_FILENAMES: set[str] = set()


@component.action(
    inputs={
        "file": Input("string", description="a .py file next to the definition"),
        "source": Input("string", description="inline Python source, instead of `file`"),
        "function": Input("string", default="run", description="the function to call"),
        "args": Input("object", default={}, description="keyword arguments of the call"),
    },
    description="Call run(context, **args), or the named function, of customer Python code",
    output="whatever the function returns: objects, lists, strings, numbers, booleans, bytes",
)
def run(
    context: ActionContext,
    *,
    file: str | None,
    source: str | None,
    function: str,
    args: dict[str, Any],
) -> Any:
    """Call ``function(context, **args)`` of the customer module and return its result."""
    module = _module(context, file, source)
    target = getattr(module, function, None)
    if not callable(target):
        raise ActionError(
            f"code {file or '<source>'!r} has no function {function!r}; "
            f"define `def {function}(context, **args):`",
            retryable=False,
        )
    return target(context, **args)


def _module(context: ActionContext, file: str | None, source: str | None) -> types.ModuleType:
    """Compile the customer module once per execution and keep it for later steps."""
    cache: dict[str, types.ModuleType] = context.resources.setdefault("code.modules", {})
    if file is not None:
        key, filename = f"file:{file}", file
        text = context.sources.get(file)
        if text is None:
            raise ActionError(
                f"code file {file!r} was not loaded with the definition; "
                "name it as a literal `file:` input of a code.run step",
                retryable=False,
            )
    elif source is not None:
        key, filename, text = source, f"<{context.step.split('.')[-1]}>", source
    else:
        raise ActionError("code.run needs `file` or `source`", retryable=False)
    module = cache.get(key)
    if module is None:
        compiled = context.resources.get(COMPILED_RESOURCE, {}).get(file) if file else None
        module = _compile(text, filename, compiled)
        cache[key] = module
    return module


def _compile(text: str, filename: str, compiled: bytes | None = None) -> types.ModuleType:
    name = filename.removesuffix(".py").replace("/", ".").strip("<>") or "customer_code"
    module = types.ModuleType(name)
    module.__file__ = filename
    lines = text.splitlines(keepends=True)
    linecache.cache[filename] = (len(text), None, lines, filename)
    CUSTOMER_FILENAMES.add(filename)
    try:
        # Compiled by the supervisor, which the sandboxed child trusts.
        code = marshal.loads(compiled) if compiled else compile(text, filename, "exec")
    except SyntaxError as error:
        raise ActionError(
            f"invalid Python in {filename!r} line {error.lineno}: {error.msg}", retryable=False
        ) from None
    # Registered so that dataclasses and pickling, which look a module up by name, work.
    # The sandboxed child is discarded after the execution, so nothing leaks into the next.
    sys.modules[name] = module
    exec(code, module.__dict__)  # customer code, confined by the sandbox it runs in
    return module
