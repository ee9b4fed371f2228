"""Jinja2 in a sandbox: the two environments (HTML with autoescape, plain text) and what a template gets checked for."""

from __future__ import annotations

import traceback
from collections.abc import Iterator, Mapping
from typing import Any

from jinja2 import ChainableUndefined, StrictUndefined, Template, TemplateSyntaxError, UndefinedError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from .problems import Field, Problem, RenderError, TemplateInvalid
from .schema import sample_context, unknown_variable

TEMPLATE_FILENAME = "<template>"  # how Jinja names a string template's frames in a traceback
_MAX_SEQUENCE = 100_000  # longest string/list `*` may build; `'x' * 10**9` would stall a worker
_MAX_EXPONENT = 100


def _blank_none(value: Any) -> Any:
    # A lead without a company should read "", not "None".
    return "" if value is None else value


class _Sandbox(ImmutableSandboxedEnvironment):
    """Immutable: a template can't change lists/dicts it is given (a shared `sender` dict, say) between recipients."""

    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > _MAX_EXPONENT:
            raise SecurityError(f"exponent {right} is too large for a template")
        if operator == "*":
            for sequence, times in ((left, right), (right, left)):
                if isinstance(sequence, str | list | tuple) and isinstance(times, int) \
                        and len(sequence) * times > _MAX_SEQUENCE:
                    raise SecurityError("the result of '*' is too long for a template")
        return super().call_binop(context, operator, left, right)


HTML = _Sandbox(autoescape=True, undefined=StrictUndefined, finalize=_blank_none)
TEXT = _Sandbox(autoescape=False, undefined=StrictUndefined, finalize=_blank_none)


def compile_jinja(source: str, field: Field, environment: _Sandbox) -> Template:
    """The Jinja template, or TemplateInvalid naming the line of the syntax error."""
    try:
        return environment.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateInvalid([Problem(field, exc.lineno, exc.message or str(exc))]) from exc


def render_jinja(template: Template, field: Field, context: Mapping[str, Any]) -> str:
    """Render, turning any failure (undefined value, SecurityError, a type error) into RenderError with a line."""
    try:
        return template.render(context)
    except Exception as exc:
        raise RenderError(field, error_line(exc), describe(exc)) from exc


def error_line(exc: BaseException) -> int | None:
    if isinstance(exc, TemplateSyntaxError):
        return exc.lineno
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == TEMPLATE_FILENAME:
            line = frame.lineno  # the innermost template frame is where it failed
    return line


def describe(exc: BaseException) -> str:
    if isinstance(exc, SecurityError):
        return f"not allowed in a template: {exc}"
    if isinstance(exc, TemplateSyntaxError):
        return exc.message or str(exc)
    return str(exc) or type(exc).__name__


def check(source: str, field: Field, environment: _Sandbox) -> list[Problem]:
    """Everything wrong with a Jinja source on its own: syntax (with the line), variables outside the context
    schema, attribute access the sandbox would refuse, features a stored template can't use; then, when
    that is all clean, a trial render with a sample lead to catch what only running shows."""
    try:
        template = environment.from_string(source)
        tree = environment.parse(source)
    except TemplateSyntaxError as exc:  # includes unknown filters and tests
        return [Problem(field, exc.lineno, exc.message or str(exc))]
    problems = [Problem(field, line, message) for line, message in _tree_problems(tree, environment)]
    if problems:
        return problems
    try:
        template.render(_trial_context())
    except UndefinedError:
        # Names were checked above; what is left is a custom field whose shape a sample can't know.
        return []
    except Exception as exc:
        return [Problem(field, error_line(exc), describe(exc))]
    return []


class _AnyCustomField(dict[str, Any]):
    """Custom fields in a trial render: whatever the template asks for exists, as an empty, chainable value."""

    def __missing__(self, key: str) -> ChainableUndefined:
        return ChainableUndefined(name=key)


def _trial_context() -> dict[str, Any]:
    context = sample_context("en")
    context["lead"]["custom"] = _AnyCustomField(context["lead"]["custom"])
    return context


def _tree_problems(tree: nodes.Template, environment: _Sandbox) -> Iterator[tuple[int, str]]:
    local = {"loop", "caller", "varargs", "kwargs", *environment.globals}
    local.update(macro.name for macro in tree.find_all(nodes.Macro))
    local.update(name.name for name in tree.find_all(nodes.Name) if name.ctx in ("store", "param"))
    for node in tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        yield node.lineno, "extends/include/import are not available in stored templates"
    yield from _walk(tree, local)


def _walk(node: nodes.Node, local: set[str]) -> Iterator[tuple[int, str]]:
    if isinstance(node, nodes.Getattr | nodes.Getitem):
        path: list[str] = []
        refused: list[tuple[int, str]] = []
        inner: nodes.Node = node
        while isinstance(inner, nodes.Getattr | nodes.Getitem):
            if isinstance(inner, nodes.Getattr):
                step: str | None = inner.attr
            else:
                step = inner.arg.value if isinstance(inner.arg, nodes.Const) and isinstance(inner.arg.value, str) \
                    else None
                if step is None:
                    yield from _walk(inner.arg, local)
                    path.clear()  # a computed key: what lies past it can't be checked by name
            if step is not None:
                if step.startswith("_"):
                    refused.insert(0, (inner.lineno, f"not allowed in a template: access to '{step}'"))
                path.insert(0, step)
            inner = inner.node
        yield from refused
        if isinstance(inner, nodes.Name):
            yield from _name_problem(inner, path, local)
        else:
            yield from _walk(inner, local)
        return
    if isinstance(node, nodes.Name):
        yield from _name_problem(node, [], local)
        return
    if isinstance(node, nodes.Filter) and node.name == "attr" and node.args \
            and isinstance(node.args[0], nodes.Const) and str(node.args[0].value).startswith("_"):
        yield node.lineno, f"not allowed in a template: access to '{node.args[0].value}'"
    for child in node.iter_child_nodes():
        yield from _walk(child, local)


def _name_problem(name: nodes.Name, path: list[str], local: set[str]) -> Iterator[tuple[int, str]]:
    if name.ctx != "load" or name.name in local:
        return
    message = unknown_variable(name.name, path)
    if message:
        yield name.lineno, message
