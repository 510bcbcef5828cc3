"""A Jinja sandbox for chat templates that cannot hang, exhaust memory or reach Python internals.

Chat templates come with model folders downloaded from the internet: they are untrusted programs. transformers
renders them with jinja2's ``ImmutableSandboxedEnvironment``, which blocks attribute tricks
(``__class__.__mro__``, ``__globals__``, ...) and mutation of lists and dicts, but bounds nothing else: nested
``range(100000)`` loops run for hours, ``'x' * 10**10`` or a doubling ``{% set s = s ~ s %}`` eats all memory.
``BoundedEnvironment`` is the same environment (same globals and filters, so templates render byte for byte as
``apply_chat_template`` renders them) with every place where a template can spend time or memory instrumented:

* **time**: a deadline checked on every call, attribute and item access, intercepted operator, filter, loop
  iteration (each ``{% for %}`` iterates through ``olmo_iter``) and output chunk;
* **size**: ``*``, ``**``, ``+`` and ``%`` check the size of their result *before* computing it; so do the
  filters and string methods that can grow text (``center``, ``indent``, ``replace``, ``join``, ``format``,
  ``tojson``, ``ljust``, ...); every string produced is charged to a work budget and every output chunk
  (also inside macros and ``{% set %}`` blocks, through ``olmo_out``) to an output budget;
* **depth**: calls nest at most ``Limits.depth`` deep (recursive macros and ``loop(...)``).

A limit hit raises ``LimitExceeded`` (a ``BaseException``, so no ``except Exception`` inside jinja or a filter
can swallow it); unsafe attribute access raises ``SecurityError`` at once instead of returning an Undefined that
prints as nothing. ``olmo3.model.template`` turns both into one clear ``TemplateError``.
"""

from __future__ import annotations

import functools
import json
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes as nodes
from jinja2.exceptions import SecurityError
from jinja2.filters import FILTERS, make_attrgetter
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, _PassArg, generate_lorem_ipsum
from jinja2.visitor import NodeTransformer

MAX_RANGE = 100_000  # jinja's own sandbox limit for range(); kept so templates behave as under transformers


@dataclass(frozen=True)
class Limits:
    """What one rendering may spend. Output and work scale with the size of the input."""

    seconds: float = 2.0
    output_chars: int = 2_000_000  # plus ``per_input_char`` for each character of input
    per_input_char: int = 8
    work_factor: int = 8  # all strings built, in total, at most this many times the output limit
    items: int = 1_000_000  # elements of one list, dict or batch
    depth: int = 100  # nested calls (macros, loop(...))
    int_bits: int = 100_000  # results of * and ** on integers
    source_chars: int = 1_000_000  # the template's own size


class LimitExceeded(BaseException):
    """A rendering ran past one of its ``Limits``; ``str()`` says which, in words."""


class Budget:
    """The running account of one rendering (or one compilation)."""

    __slots__ = ("deadline", "depth", "limits", "max_chars", "max_work", "work")

    def __init__(self, limits: Limits, input_chars: int = 0) -> None:
        self.limits = limits
        self.deadline = time.monotonic() + limits.seconds
        self.max_chars = limits.output_chars + limits.per_input_char * input_chars
        self.max_work = self.max_chars * limits.work_factor
        self.work = 0
        self.depth = 0

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise LimitExceeded(f"took longer than {self.limits.seconds:g} s (a loop that never ends?)")

    def too_much(self) -> LimitExceeded:
        return LimitExceeded(f"produced too much text (over {self.max_chars:,} characters)")

    def chars(self, n: int) -> None:
        """Refuse an operation that would build ``n`` characters (or elements of text)."""
        if n > self.max_chars:
            raise self.too_much()

    def items(self, n: int) -> None:
        if n > self.limits.items:
            raise LimitExceeded(f"built too large a list (over {self.limits.items:,} items)")

    def bits(self, n: int) -> None:
        if n > self.limits.int_bits:
            raise LimitExceeded(f"computed too large a number (over {self.limits.int_bits:,} bits)")

    def check(self, value: Any) -> Any:
        """Size-check a freshly built value and charge strings to the work budget."""
        if isinstance(value, str | bytes):
            self.chars(len(value))
            self.work += len(value)
            if self.work > self.max_work:
                raise self.too_much()
        elif isinstance(value, list | tuple | dict | set | frozenset):
            self.items(len(value))
        return value


_BUDGET: ContextVar[Budget | None] = ContextVar("olmo3_template_budget", default=None)


def active_budget() -> Budget:
    budget = _BUDGET.get()
    if budget is None:  # a template run outside render()/compile: never unbounded
        budget = Budget(Limits())
        _BUDGET.set(budget)
    return budget


@contextmanager
def budget_scope(budget: Budget) -> Iterator[Budget]:
    """Make ``budget`` the active one for the hooks while the block runs."""
    token = _BUDGET.set(budget)
    try:
        yield budget
    finally:
        _BUDGET.reset(token)


def deep_size(obj: Any, limit: int) -> int:
    """About how many characters ``str(obj)`` has (stops counting past ``limit``); cycles are counted once."""
    total, stack, seen = 0, [obj], set()
    while stack and total <= limit:
        o = stack.pop()
        if isinstance(o, str | bytes):
            total += len(o) + 2
        elif isinstance(o, bool | float) or o is None:
            total += 8
        elif isinstance(o, int):
            total += o.bit_length() // 3 + 2
        elif isinstance(o, Mapping | list | tuple | set | frozenset | Namespace):
            if id(o) in seen:
                continue
            seen.add(id(o))
            if isinstance(o, Namespace):
                o = object.__getattribute__(o, "_Namespace__attrs")
            total += 2 + 2 * len(o)
            if isinstance(o, Mapping):
                stack.extend(o.keys())
                stack.extend(o.values())
            else:
                stack.extend(o)
        else:
            total += 64
    return total


_PERCENT_SPEC = re.compile(r"%[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_format(budget: Budget, fmt: str, args: Iterable[Any], percent: bool) -> None:
    """Refuse ``%``/``str.format`` formatting whose widths or arguments would build too much text."""
    args = list(args)
    budget.chars(len(fmt) + deep_size(args, budget.max_chars))
    star = False
    if percent:
        for width, precision in _PERCENT_SPEC.findall(fmt):
            for n in (width, precision):
                if n == "*":
                    star = True
                elif n:
                    budget.chars(int(n))
    else:
        try:
            fields = list(string.Formatter().parse(fmt))
        except ValueError:
            return  # malformed: str.format raises its own error
        for _, _, spec, _ in fields:
            if spec:
                star = star or "{" in spec
                for n in re.findall(r"\d+", spec):
                    budget.chars(int(n))
    if star:
        for a in args:
            if isinstance(a, int):
                budget.chars(a)


def _guarded_binop(budget: Budget, op: str, left: Any, right: Any) -> None:
    """Check the size of ``left op right`` before it is computed."""
    seq = (str, bytes, list, tuple)
    if op == "*":
        for a, b in ((left, right), (right, left)):
            if isinstance(a, seq) and isinstance(b, int) and not isinstance(b, bool):
                n = len(a) * max(b, 0)
                if isinstance(a, str | bytes):
                    budget.chars(n)
                else:  # a list of references is cheap; printing or joining it is not
                    budget.items(n)
                    budget.chars(deep_size(a, budget.max_chars) * max(b, 0))
        if isinstance(left, int) and isinstance(right, int):
            budget.bits(left.bit_length() + right.bit_length())
    elif op == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0:
            budget.bits(max(left.bit_length(), 1) * right)
    elif op == "+":
        if isinstance(left, seq) and isinstance(right, seq):
            n = len(left) + len(right)
            if isinstance(left, str | bytes):
                budget.chars(n)
            else:
                budget.items(n)
    elif op == "%" and isinstance(left, str):
        _check_format(budget, left, right if isinstance(right, tuple) else [right], percent=True)


def _latin1(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _check_str_method(budget: Budget, method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse calls of string methods that would build more than the budget allows."""
    owner = getattr(method, "__self__", None)
    name = getattr(method, "__name__", "")
    if not isinstance(owner, str | bytes):
        return
    if name in ("center", "ljust", "rjust", "zfill") and args and isinstance(args[0], int):
        budget.chars(args[0])
    elif name == "expandtabs":
        tab = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(tab, int):
            tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
            budget.chars(tabs * max(tab, 0) + len(owner))
    elif name == "replace" and len(args) >= 2:
        old, new = args[0], args[1]
        if isinstance(old, str | bytes) and isinstance(new, str | bytes) and type(old) is type(owner):
            text, old_text = _latin1(owner), _latin1(old)  # bytes counted as text: the same counts
            hits = text.count(old_text) if old_text else len(text) + 1
            budget.chars(len(text) + hits * max(len(new) - len(old), 0))
    elif name == "join" and args:
        items = args[0]
        n = len(items) if isinstance(items, list | tuple) else 0
        budget.chars(deep_size(items, budget.max_chars) + len(owner) * n)
    elif name == "translate" and args and isinstance(args[0], Mapping):
        widest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
        budget.chars(len(owner) * widest)


# ---------------------------------------------------------------------------------------------- filters
def _value_index(fn: Callable[..., Any]) -> int:
    return 0 if _PassArg.from_obj(fn) is None else 1


# Filters that walk containers without turning them into text: no deep-size check of their input.
_WALKERS = frozenset(
    {
        *("abs", "attr", "batch", "count", "d", "default", "dictsort", "first", "float", "groupby", "int", "items"),
        *("join", "last", "length", "list", "map", "max", "min", "random", "reject", "rejectattr", "reverse"),
        *("round", "select", "selectattr", "slice", "sort", "sum", "tojson", "unique"),
    }
)


def _filter_precheck(budget: Budget, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    value = args[0] if args else None
    if name not in _WALKERS:
        budget.chars(deep_size(value, budget.max_chars))
    text_len = len(value) if isinstance(value, str) else 0
    arg1 = args[1] if len(args) > 1 else None
    if name == "center" and isinstance(arg1, int):
        budget.chars(arg1)
    elif name == "indent":
        width = arg1 if arg1 is not None else kwargs.get("width", 4)
        per_line = width if isinstance(width, int) else len(str(width))
        budget.chars(text_len + (str(value).count("\n") + 1) * max(per_line, 0))
    elif name == "wordwrap":
        width = arg1 if isinstance(arg1, int) else kwargs.get("width", 79)
        wrap = args[3] if len(args) > 3 else kwargs.get("wrapstring")
        lines = text_len // max(int(width), 1) + str(value).count("\n") + 1
        budget.chars(text_len + lines * len(str(wrap or "\n")))
    elif name == "replace" and len(args) >= 3:
        s, old, new = str(value), str(args[1]), str(args[2])
        hits = len(s) + 1 if not old else s.count(old)
        budget.chars(len(s) + hits * max(len(new) - len(old), 0))
    elif name == "format":
        _check_format(budget, str(value), list(args[1:]) + list(kwargs.values()), percent=True)
    elif name in ("batch", "slice") and isinstance(arg1, int):
        budget.items(arg1)


def _guard_filter(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    skip = _value_index(fn)

    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget = active_budget()
        budget.tick()
        _filter_precheck(budget, name, args[skip:], kwargs)
        return budget.check(fn(*args, **kwargs))

    return guarded


@jinja2.pass_environment
def _join(env: jinja2.Environment, value: Iterable[Any], d: str = "", attribute: str | int | None = None) -> str:
    budget = active_budget()
    items = list(value)
    budget.items(len(items))
    if attribute is not None:
        getter = make_attrgetter(env, attribute)
        items = [getter(x) for x in items]
    budget.chars(deep_size(items, budget.max_chars) + len(str(d)) * len(items))
    return str(d).join(map(str, items))


@jinja2.pass_environment
def _sum(env: jinja2.Environment, iterable: Iterable[Any], attribute: str | int | None = None, start: Any = 0) -> Any:
    budget = active_budget()
    getter = make_attrgetter(env, attribute) if attribute is not None else None
    total = start
    for x in iterable:
        budget.tick()
        item = getter(x) if getter is not None else x
        _guarded_binop(budget, "+", total, item)
        total = budget.check(total + item)
    return total


def _tojson(
    x: Any, ensure_ascii: bool = False, indent: int | str | None = None, separators: Any = None, sort_keys: bool = False
) -> str:
    """transformers' ``tojson`` (``json.dumps`` without HTML escaping), built piece by piece within the budget."""
    budget = active_budget()
    budget.chars(100 * (indent if isinstance(indent, int) else len(indent or "")))
    encoder = json.JSONEncoder(ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
    parts, size = [], 0
    for part in encoder.iterencode(x):  # the same text as json.dumps, which joins these pieces
        size += len(part)
        budget.chars(size)
        parts.append(part)
    return "".join(parts)


# ---------------------------------------------------------------------------------------------- globals
def _raise_exception(message: Any) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _range(*args: int) -> range:
    budget = active_budget()
    budget.tick()
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise OverflowError(f"range too big: the sandbox allows at most {MAX_RANGE} items")
    return rng


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    active_budget().chars(int(n) * int(max) * 12)
    return str(generate_lorem_ipsum(n=n, html=html, min=min, max=max))


class TemplateDict:
    """transformers' ``dict`` global: builds dicts, exposes nothing of the ``dict`` type."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict.fromkeys(*args, **kwargs)


class TemplateNamespace(Namespace):
    """transformers' ``namespace``: no underscore-prefixed attributes."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # jinja's signature trick: namespace(self=...) works
        self, rest = args[0], args[1:]
        attrs = dict(*rest, **kwargs)
        for name in attrs:
            TemplateNamespace._check_name(name)
        Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        TemplateNamespace._check_name(name)
        Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise SecurityError(f"a namespace attribute may not start with an underscore: {name!r}")


class GenerationTag(jinja2.ext.Extension):
    """``{% generation %}…{% endgeneration %}`` (transformers' assistant-mask tag): renders its body as is."""

    tags = {"generation"}  # noqa: RUF012 - jinja's Extension declares it a plain set

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Callable[[], str]) -> str:
        return caller()


# ---------------------------------------------------------------------------------------------- environment
def _env_call(name: str, args: list[nodes.Node], lineno: int | None = None) -> nodes.Call:
    lineno = lineno if lineno is not None else args[0].lineno
    return nodes.Call(nodes.EnvironmentAttribute(name, lineno=lineno), args, [], None, None, lineno=lineno)


class _Instrument(NodeTransformer):
    """Routes every loop, output and ``~`` concatenation of a parsed template through the environment's guards."""

    def visit_For(self, node: nodes.For) -> nodes.Node:  # noqa: N802 - jinja's visitor naming
        self.generic_visit(node)
        node.iter = _env_call("olmo_iter", [node.iter], node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:  # noqa: N802
        self.generic_visit(node)
        return _env_call("olmo_concat", list(node.nodes), node.lineno)

    def visit_Output(self, node: nodes.Output) -> nodes.Node:  # noqa: N802
        self.generic_visit(node)
        node.nodes = [
            _env_call("olmo_out", [nodes.Const(c.data, lineno=c.lineno) if isinstance(c, nodes.TemplateData) else c])
            for c in node.nodes
        ]
        return node


class _GuardedIterable:
    """What a ``{% for %}`` loop iterates: the same items, with the deadline checked before each one."""

    __slots__ = ("_budget", "_inner")

    def __init__(self, inner: Any, budget: Budget) -> None:
        self._inner, self._budget = inner, budget

    def __iter__(self) -> Iterator[Any]:
        tick = self._budget.tick
        for item in self._inner:
            tick()
            yield item

    def __len__(self) -> int:
        return len(self._inner)


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """``ImmutableSandboxedEnvironment`` as transformers configures it, with every cost bounded (module docstring)."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self) -> None:
        super().__init__(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, jinja2.ext.loopcontrols])
        filters = {name: _guard_filter(name, fn) for name, fn in FILTERS.items()}
        filters.update(join=_join, sum=_sum, tojson=_guard_filter("tojson", _tojson))
        self.filters = filters
        self.globals.update(
            range=_range,
            lipsum=_lipsum,
            raise_exception=_raise_exception,
            strftime_now=_strftime_now,
            dict=TemplateDict(),
            namespace=TemplateNamespace,
        )

    def compile_bounded(self, source: str, budget: Budget) -> jinja2.Template:
        """Parse, instrument and compile ``source`` (jinja folds constants while compiling: bounded too)."""
        if len(source) > budget.limits.source_chars:
            raise LimitExceeded(f"is too large ({len(source):,} characters)")

        with budget_scope(budget):
            tree = _Instrument().visit(self.parse(source))
            tree.set_environment(self)
            return self.from_string(tree)

    # -- hooks the sandboxed code calls
    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        budget = active_budget()
        budget.tick()
        _check_str_method(budget, __obj, args, kwargs)
        budget.depth += 1
        try:
            if budget.depth > budget.limits.depth:
                raise LimitExceeded(f"nests calls too deeply (over {budget.limits.depth} levels: runaway recursion?)")
            return budget.check(super().call(__context, __obj, *args, **kwargs))
        finally:
            budget.depth -= 1

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = active_budget()
        budget.tick()
        _guarded_binop(budget, operator, left, right)
        return budget.check(super().call_binop(context, operator, left, right))

    def getattr(self, obj: Any, attribute: str) -> Any:
        active_budget().tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        budget = active_budget()
        budget.tick()
        value = super().getitem(obj, argument)
        return budget.check(value) if isinstance(argument, slice) else value

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        raise SecurityError(f"access to attribute {attribute!r} of a {type(obj).__name__!r} object is unsafe")

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        fmt = super().wrap_str_format(value)
        if fmt is None:
            return None
        template_string = str(value.__self__)
        is_map = value.__name__ == "format_map"

        @functools.wraps(fmt)
        def checked(*args: Any, **kwargs: Any) -> str:
            budget = active_budget()
            values = list(args[0].values()) if is_map and args and isinstance(args[0], Mapping) else list(args)
            _check_format(budget, template_string, values + list(kwargs.values()), percent=False)
            return str(budget.check(fmt(*args, **kwargs)))

        return checked

    # -- called by the instrumented template (see _Instrument)
    def olmo_iter(self, iterable: Any) -> _GuardedIterable:
        return _GuardedIterable(iterable, active_budget())

    def olmo_out(self, value: Any) -> str:
        budget = active_budget()
        if not isinstance(value, str):
            budget.chars(deep_size(value, budget.max_chars))
        return str(budget.check(str(value)))

    def olmo_concat(self, *parts: Any) -> str:
        budget = active_budget()
        budget.chars(sum(len(p) if isinstance(p, str) else deep_size(p, budget.max_chars) for p in parts))
        return str(budget.check("".join(map(str, parts))))
