"""The Home Assistant API LightNVR uses, checked against a release's source without importing it.

`collect` reads the integration with `ast` and lists its uses of HA: imported names, calls and
attribute chains rooted at them, members of well-known receivers (`hass`, parameters annotated
with HA classes, `self` in subclasses of HA classes) and the HA methods those classes override.
`Release` parses a release's modules straight from its wheel; `check` resolves each use there
(the name must exist, a call must fit the signature) and `deprecations` looks for deprecation
markers in the source of what we use.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
import importlib
from pathlib import Path
import re
import sys
from typing import Any
import zipfile

HASS = "homeassistant.core.HomeAssistant"
# Receivers known by name (HA code always calls its instance `hass`) and the members of `hass`
# holding the other well-known objects; anything else is typed by annotations only.
RECEIVERS = {"hass": HASS, "self.hass": HASS, "self._hass": HASS}
HASS_MEMBERS = {
    "config_entries": "homeassistant.config_entries.ConfigEntries",
    "http": "homeassistant.components.http.HomeAssistantHTTP",
    "bus": "homeassistant.core.EventBus",
    "services": "homeassistant.core.ServiceRegistry",
    "states": "homeassistant.core.StateMachine",
    "config": "homeassistant.core_config.Config",
}
REPORTERS = {"report_usage", "_report_deprecated", "report"}  # HA's deprecation reporters
CALL = "()"  # a path step: what a call returns, or an instance of the class before it
# Python 3.14 (PEP 758) allows `except A, B:`; the parser of Python 3.13 needs parentheses.
_EXCEPT_LIST = re.compile(r"^(\s*except\*?\s+)(?!\()([\w.]+(?:\s*,\s*[\w.]+)+)\s*:", re.MULTILINE)
_VERSION = re.compile(r"\b20\d\d\.\d{1,2}(?:\.\d+)?\b")
_FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)
_DEFS = (*_FUNCS, ast.ClassDef)

type Func = ast.FunctionDef | ast.AsyncFunctionDef
type Params = tuple[list[tuple[str, bool, bool]], bool, bool]  # (name, default, kw-only), *, **
type Conditions = tuple[tuple[ast.expr, bool], ...]  # `if` tests, and the branch taken


@dataclass(frozen=True)
class Call:
    """A call's positional arguments, keyword arguments, and whether it uses * or **."""

    args: tuple[ast.expr, ...]
    keywords: tuple[tuple[str, ast.expr], ...]
    star: bool

    def bound(self, params: Params) -> dict[str, ast.expr]:
        """What we pass for each parameter we pass."""
        positional = [name for name, _, kw_only in params[0] if not kw_only]
        return dict(zip(positional, self.args, strict=False)) | dict(self.keywords)


@dataclass(frozen=True)
class Use:
    """A use of HA: `path[0]` is a qualified name (`|` between alternatives), then steps."""

    file: str
    line: int
    text: str
    path: tuple[str, ...]
    call: Call | None = None
    override: Func | None = None  # our method replacing the one at `path`

    def where(self) -> str:
        """`file:line name`, as problems name it."""
        return f"{self.file}:{self.line} {self.text}"


@dataclass
class Module:
    """A module's top-level names: nodes, or qualified names for what it imports."""

    name: str
    package: bool
    names: dict[str, Any] = field(default_factory=dict)
    star: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Target:
    """What a path resolves to; `kind`: module, class, func, value, stdlib or unknown."""

    kind: str
    qual: str
    node: Any = None
    module: Module | None = None
    instance: bool = False  # an instance of the class, or a method bound to one
    deprecated: str | None = None


UNKNOWN = Target("unknown", "?")


def _target(node: ast.AST, qual: str, module: Module | None, **extra: Any) -> Target:
    kind = "class" if isinstance(node, ast.ClassDef) else "value"
    kind = "func" if isinstance(node, _FUNCS) else kind
    return Target(kind, qual, node, module, **extra)


def _targets(node: ast.AST) -> list[ast.expr]:
    if isinstance(node, ast.Assign):
        return node.targets
    return [node.target] if isinstance(node, ast.AnnAssign | ast.NamedExpr) else []


def _decorators(node: Any) -> list[str]:
    return [ast.unparse(d.func if isinstance(d, ast.Call) else d) for d in node.decorator_list]


def bind(module: Module, body: list[ast.stmt]) -> None:
    """Record top-level names, also in `if`/`try` blocks (TYPE_CHECKING imports, fallbacks)."""
    for node in body:
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.name.split(".")[: -node.level + module.package or None]
                base = ".".join([*parts, base]).strip(".")
            for alias in node.names:
                if alias.name == "*":
                    module.star.append(base)
                module.names[alias.asname or alias.name] = f"{base}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.partition(".")[0]
                module.names[alias.asname or top] = alias.name if alias.asname else top
        elif isinstance(node, _DEFS):
            module.names[node.name] = node
        elif isinstance(node, ast.TypeAlias):
            module.names[node.name.id] = node
        names = [n for t in _targets(node) for n in ast.walk(t) if isinstance(n, ast.Name)]
        module.names.update((name.id, node) for name in names)
        if isinstance(node, ast.If | ast.Try):
            handlers = [s for h in getattr(node, "handlers", []) for s in h.body]
            bind(module, node.body + node.orelse + handlers)


def members(cls: ast.ClassDef) -> dict[str, ast.AST]:
    """A class body's names and the `self.<name>` its methods assign."""
    found: dict[str, ast.AST] = {}
    for node in ast.walk(cls):
        for target in _targets(node):
            if isinstance(target, ast.Attribute) and ast.unparse(target.value) == "self":
                found.setdefault(target.attr, node)
    for node in cls.body:
        setter = isinstance(node, ast.FunctionDef) and "." in "".join(_decorators(node))
        if isinstance(node, _DEFS) and not (setter and node.name in found):
            found[node.name] = node  # a property's setter would hide the getter's type
        found.update((t.id, node) for t in _targets(node) if isinstance(t, ast.Name))
    return found


def _dataclass(node: ast.ClassDef) -> bool:
    """A dataclass, or an HA entity description (made a dataclass by its metaclass)."""
    frozen_or_thawed = any(k.arg == "frozen_or_thawed" for k in node.keywords)
    return frozen_or_thawed or any("dataclass" in d for d in _decorators(node))


def _fields(node: ast.ClassDef, typed_dict: bool) -> list[tuple[str, bool, bool]]:
    """A dataclass's own fields as parameters (TypedDict keys: keyword-only, optional)."""
    kw_only = typed_dict or any("kw_only=True" in ast.unparse(d) for d in node.decorator_list)
    fields = []
    for item in node.body:
        if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
            continue
        annotation, value, options = ast.unparse(item.annotation), item.value, {}
        kw_only = kw_only or "KW_ONLY" in annotation
        if isinstance(value, ast.Call) and ast.unparse(value.func).endswith("field"):
            options = {k.arg: ast.unparse(k.value) for k in value.keywords}
        if "ClassVar" in annotation or "KW_ONLY" in annotation or options.get("init") == "False":
            continue
        default = typed_dict or (value is not None and not options)
        default = default or "default" in options or "default_factory" in options
        fields.append((item.target.id, default, kw_only or options.get("kw_only") == "True"))
    return fields


def _outside(qual: str) -> Target:
    """A name outside HA: a stdlib object stands for itself, anything else is unknown."""
    module, _, name = qual.rpartition(".")
    if module.partition(".")[0] not in sys.stdlib_module_names:
        return UNKNOWN
    try:
        return Target("stdlib", qual, getattr(importlib.import_module(module), name))
    except (ImportError, AttributeError):
        return UNKNOWN


class Release:
    """A release's `homeassistant` package, parsed from its wheel as modules are needed."""

    def __init__(self, version: str, wheel: Path) -> None:
        self.version = version
        self._zip = zipfile.ZipFile(wheel)
        self._files = set(self._zip.namelist())
        self._modules: dict[str, Module | None] = {}
        self._members: dict[ast.ClassDef, dict[str, ast.AST]] = {}

    def close(self) -> None:
        """Close the wheel."""
        self._zip.close()

    def module(self, name: str) -> Module | None:
        """The module or package `name`, if the release has it."""
        if name not in self._modules:
            self._modules[name] = None
            base = name.replace(".", "/")
            for path, package in ((f"{base}.py", False), (f"{base}/__init__.py", True)):
                if name.partition(".")[0] == "homeassistant" and path in self._files:
                    source = _EXCEPT_LIST.sub(r"\1(\2):", self._zip.read(path).decode())
                    self._modules[name] = module = Module(name, package)
                    bind(module, ast.parse(source).body)
        return self._modules[name]

    def lookup(self, qual: str) -> Target | str:
        """Resolve a qualified name; a string says what is missing."""
        parts = qual.split(".")
        for i in range(len(parts), 0, -1):
            if module := self.module(".".join(parts[:i])):
                return self.walk(Target("module", module.name, None, module), parts[i:])
        return _outside(qual)

    def walk(self, target: Target | str, steps: list[str] | tuple[str, ...]) -> Target | str:
        """Follow attribute and CALL steps from `target`."""
        for attr in steps:
            target = self.step(target, attr) if isinstance(target, Target) else target
        return target

    def resolve(self, path: tuple[str, ...]) -> Target | str:
        """Resolve a use's path; of alternatives, the first that resolves."""
        found = [self.walk(self.lookup(root), path[1:]) for root in path[0].split("|")]
        return next((t for t in found if isinstance(t, Target)), found[0])

    def step(self, target: Target, attr: str) -> Target | str:
        """One step along a path: an attribute, or CALL."""
        if target.kind in ("unknown", "stdlib"):
            return UNKNOWN
        if attr == CALL:
            if target.kind == "class" and not target.instance:
                return Target("class", target.qual, target.node, target.module, True)
            return self.type_of(target)
        if target.kind == "module":
            return self.module_member(target.module, attr)  # type: ignore[arg-type]
        if target.kind == "class":
            return self.class_member(target, attr)
        return self.step(self.type_of(target), attr)  # a property or an annotated attribute

    def module_member(
        self, module: Module, name: str, seen: frozenset[str] = frozenset()
    ) -> Target | str:
        """A module's name: defined or imported there, a submodule, or a deprecated alias."""
        qual, bound = f"{module.name}.{name}", module.names.get(name)
        deprecated = self._deprecated_constant(module, name)
        if isinstance(bound, str) and bound not in seen:
            parent, _, last = bound.rpartition(".")
            if (source := self.module(parent)) is not None:
                return self.module_member(source, last, seen | {bound})
            return self.lookup(bound) if bound.startswith("homeassistant.") else _outside(bound)
        if isinstance(bound, ast.Assign) and isinstance(bound.value, ast.Name | ast.Attribute):
            alias = self.expression(bound.value, Target("module", module.name, None, module))
            if isinstance(alias, Target) and alias.kind != "unknown":  # `Platform = …Platforms`
                return Target(alias.kind, alias.qual, alias.node, alias.module, False, deprecated)
        if bound is not None and not isinstance(bound, str):
            return _target(bound, qual, module, deprecated=deprecated)
        if module.package and self.module(qual):
            return self.lookup(qual)
        for star in module.star:
            found = self.module_member(self.module(star) or Module(star, False), name, seen)
            if isinstance(found, Target):
                return found
        if deprecated:
            return Target("value", qual, None, module, deprecated=deprecated)
        lazy = module.names.get("__getattr__")  # HA's own only serves _DEPRECATED_ names
        if lazy is not None and "check_if_deprecated_constant" not in ast.unparse(lazy):
            return UNKNOWN
        return f"{name} not found in {module.name}"

    def _deprecated_constant(self, module: Module, name: str) -> str | None:
        node = module.names.get(f"_DEPRECATED_{name}")
        if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Call):
            found = _VERSION.findall(ast.unparse(node.value))
            return "deprecated constant" + (f" (breaks in {found[-1]})" if found else "")
        return None

    def expression(self, node: ast.expr, where: Target) -> Target | str:
        """Resolve a name, attribute chain or annotation written in `where`'s module."""
        if isinstance(node, ast.Name) and where.module:
            return self.module_member(where.module, node.id)
        if isinstance(node, ast.Attribute):
            return self.walk(self.expression(node.value, where), [node.attr])
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return self.expression(ast.parse(node.value, mode="eval").body, where)
        if isinstance(node, ast.BinOp):  # `X | None`
            return self.expression(node.left, where)
        if isinstance(node, ast.Subscript):  # `X[T]`
            return self.expression(node.value, where)
        return UNKNOWN

    def mro(self, cls: Target) -> Iterator[Target]:
        """The class, then its bases depth first (stdlib and unknown ones as they are)."""
        todo, seen = [cls], set()
        while todo:
            current = todo.pop(0)
            if current.qual not in seen:
                seen.add(current.qual)
                yield current
                if current.kind == "class":
                    found = [self.expression(base, current) for base in current.node.bases]
                    todo[:0] = [b if isinstance(b, Target) else UNKNOWN for b in found]

    def class_member(self, cls: Target, name: str) -> Target | str:
        """A class's member, looking through its bases."""
        for owner in self.mro(cls):
            if owner.kind == "unknown" or (owner.kind == "stdlib" and hasattr(owner.node, name)):
                return UNKNOWN
            if owner.kind != "class":
                continue
            if owner.node not in self._members:  # each class is read once
                self._members[owner.node] = members(owner.node)
            if (node := self._members[owner.node].get(name)) is not None:
                return _target(node, f"{owner.qual}.{name}", owner.module, instance=cls.instance)
        return f"{name} not found in {cls.qual} or its bases"

    def type_of(self, target: Target) -> Target:
        """The class of a value: a function's return annotation, an annotation, a constructor."""
        node = target.node
        annotation = getattr(node, "returns", None) or getattr(node, "annotation", None)
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            annotation = node.value.func  # `self.bus = EventBus(self)`
        if annotation is None or target.kind not in ("func", "value"):
            return UNKNOWN
        found = self.expression(annotation, target)
        if isinstance(found, Target) and found.kind == "class":
            return Target("class", found.qual, found.node, found.module, True)
        return UNKNOWN

    def signature(self, target: Target) -> Params | None:
        """The parameters a call of `target` takes; None when they cannot be known."""
        if target.kind == "class" and not target.instance:
            owners = [o for o in self.mro(target) if o.kind in ("class", "stdlib")]
            typed_dict = any("TypedDict" in o.qual for o in owners if o.kind == "stdlib")
            if typed_dict or any(o.kind == "class" and _dataclass(o.node) for o in owners):
                classes = [o.node for o in reversed(owners) if o.kind == "class"]
                own = [_fields(c, typed_dict) for c in classes if typed_dict or _dataclass(c)]
                return [f for fields in own for f in fields], False, False
            init = self.class_member(target, "__init__")
            if isinstance(init, str):  # object.__init__
                return [], False, False
            sig = self.signature(Target(init.kind, init.qual, init.node, init.module, True))
            nodes = ast.walk(init.node) if init.kind == "func" else ()
            calls = [c for c in nodes if isinstance(c, ast.Call)]
            up = [c for c in calls if ast.unparse(c.func) == "super().__init__"]
            if sig and sig[2] and up and any(k.arg is None for k in up[0].keywords):
                # **kwargs passed on to the base class: what it takes besides what we give it.
                owner = next(o for o in self.mro(target) if f"{o.qual}.__init__" == init.qual)
                base = [o for o in self.mro(owner) if o.kind == "class"][1:2]
                inner = base and self.signature(Target("class", "", base[0].node, base[0].module))
                given = {k.arg for k in up[0].keywords} | {n for n, _, _ in sig[0]}
                if inner:
                    # What we pass positionally (`*args` passes them all) takes only the
                    # base's positional parameters; its keyword-only ones remain.
                    positional = [p for p in inner[0] if not p[2]]
                    starred = any(isinstance(a, ast.Starred) for a in up[0].args)
                    taken = {n for n, _, _ in positional[: len(up[0].args)]}
                    if starred:
                        taken = {n for n, _, _ in positional}
                    rest = [p for p in inner[0] if p[0] not in taken]
                    extra = [(n, d, True) for n, d, _ in rest if n not in given]
                    return sig[0] + extra, sig[1], inner[2]
            return sig
        if target.kind == "class":  # calling an instance: a callback protocol
            call = self.class_member(target, "__call__")
            target = call if isinstance(call, Target) else UNKNOWN
        if target.kind != "func":
            return None
        args, decorators = target.node.args, _decorators(target.node)
        positional = args.posonlyargs + args.args
        defaults = [False] * (len(positional) - len(args.defaults)) + [True] * len(args.defaults)
        params = [(a.arg, d, False) for a, d in zip(positional, defaults, strict=True)]
        if "classmethod" in decorators or (target.instance and "staticmethod" not in decorators):
            params = params[1:]
        kw_only = zip(args.kwonlyargs, args.kw_defaults, strict=True)
        params += [(a.arg, d is not None, True) for a, d in kw_only]
        return params, args.vararg is not None, args.kwarg is not None


def check_call(params: Params, call: Call) -> str | None:
    """What is wrong with a call, given the parameters of what it calls."""
    fields, varargs, varkw = params
    count, keywords = len(call.args), [k for k, _ in call.keywords]
    positional = [name for name, _, kw_only in fields if not kw_only]
    if count > len(positional) and not varargs:
        return f"takes {len(positional)} positional arguments, {count} given"
    if (unknown := [k for k in keywords if k not in {f[0] for f in fields}]) and not varkw:
        return f"has no parameter {', '.join(unknown)}"
    missing = [
        name
        for i, (name, default, kw_only) in enumerate(fields)
        if not default and name not in keywords and (kw_only or i >= count)
    ]
    return f"misses required {', '.join(missing)}" if missing and not call.star else None


def check_override(params: Params, ours: Func) -> str | None:
    """What is wrong with our override, given how HA calls its own method."""
    args = ours.args
    positional = args.posonlyargs + args.args
    positional = positional if "staticmethod" in _decorators(ours) else positional[1:]
    theirs = [name for name, _, kw_only in params[0] if not kw_only]
    if len(theirs) > len(positional) and not args.vararg:
        return f"override takes {len(positional)} arguments, HA passes up to {len(theirs)}"
    if (required := len(positional) - len(args.defaults)) > len(theirs):
        return f"override requires {required} arguments, HA passes {len(theirs)}"
    accepted = {a.arg for a in args.kwonlyargs + positional}
    if not args.kwarg and (lacks := [n for n, _, kw in params[0] if kw and n not in accepted]):
        return f"override lacks keyword {', '.join(lacks)}"
    return None


def check(release: Release, uses: list[Use]) -> list[str]:
    """Every use that does not resolve in `release`, or whose call does not fit."""
    problems = []
    for use in uses:
        target = release.resolve(use.path)
        if isinstance(target, str):
            reason = None if use.override else target  # an override of nothing: `overrides`
        elif use.override:
            params = release.signature(target) if target.kind == "func" else None
            reason = params and check_override(params, use.override)
        elif use.call:
            params = release.signature(target)
            reason = params and check_call(params, use.call)
        else:
            reason = None
        if reason:
            problems.append(f"{release.version}: {use.where()} — {reason}")
    return problems


def overrides(releases: list[Release], uses: list[Use]) -> list[str]:
    """Our methods that override HA's in some releases but not all (renamed or new hooks)."""
    problems = []
    for use in (u for u in uses if u.override):
        missing = [r.version for r in releases if isinstance(r.resolve(use.path), str)]
        if missing and len(missing) < len(releases):
            problems.append(f"{', '.join(missing)}: {use.where()} — no such method to override")
    return problems


@dataclass
class _Scope:
    """What names mean where we are: imports, typed parameters and locals, and `self`."""

    env: dict[str, tuple[str, ...]]
    bases: str = ""  # the HA bases of the class we are in (`|` between them)
    ours: frozenset[str] = frozenset()  # names our classes define: `self.<name>` is ours
    inherited: frozenset[str] = frozenset()  # the same for our bases only: `super().<name>`

    def path(self, node: ast.expr | None) -> tuple[str, ...] | None:
        """The path of an expression rooted at HA, or None."""
        if node is not None and (text := ast.unparse(node)) in RECEIVERS:
            return (RECEIVERS[text], CALL)
        if isinstance(node, ast.Name):
            return self.env.get(node.id)
        if isinstance(node, ast.Call):
            inner = self.path(node.func)
            return None if inner is None else (*inner, CALL)
        if not isinstance(node, ast.Attribute):
            return None
        if ast.unparse(node.value) in ("self", "super()") and self.bases:
            ours = self.ours if isinstance(node.value, ast.Name) else self.inherited
            return None if node.attr in ours else (self.bases, CALL, node.attr)
        inner = self.path(node.value)
        if inner == (HASS, CALL) and node.attr in HASS_MEMBERS:
            return (HASS_MEMBERS[node.attr], CALL)
        return None if inner is None else (*inner, node.attr)


class _Collector:
    """Records the uses of HA in one of our files."""

    def __init__(self, file: str, classes: dict[str, Any], aliases: dict[str, Any]) -> None:
        self.file, self.classes, self.aliases = file, classes, aliases
        self.uses: list[Use] = []

    def add(self, node: Any, path: tuple[str, ...], text: str = "", **extra: Any) -> None:
        text = text or ast.unparse(node.func if isinstance(node, ast.Call) else node)
        self.uses.append(Use(self.file, node.lineno, text, path, **extra))

    def block(self, body: list[ast.stmt], scope: _Scope) -> None:
        """Record the uses in statements; functions and classes get scopes of their own."""
        todo: list[ast.AST] = list(body)
        parents: dict[ast.AST, ast.AST] = {}
        nested: list[Any] = []
        while todo:
            node = todo.pop()
            if isinstance(node, _DEFS):
                nested.append(node)
                continue
            for child in ast.iter_child_nodes(node):
                parents[child] = node
                todo.append(child)
            parent = parents.get(node)
            if isinstance(node, ast.Call) and (path := scope.path(node.func)):
                keywords = tuple((k.arg, k.value) for k in node.keywords if k.arg)
                star = any(isinstance(a, ast.Starred) for a in node.args)
                star = star or len(keywords) < len(node.keywords)
                self.add(node, path, call=Call(tuple(node.args), keywords, star))
            elif not isinstance(node, ast.Attribute) or isinstance(parent, ast.Attribute):
                continue  # only whole attribute chains are uses
            elif isinstance(node.ctx, ast.Load) and not (
                isinstance(parent, ast.Call) and parent.func is node
            ):
                if (path := scope.path(node)) and path[-1] != CALL:
                    self.add(node, path)
            elif scope.bases and ast.unparse(node).startswith("self._attr_"):
                self.add(node, (scope.bases, CALL, node.attr))  # set for HA: HA must read it
        for node in sorted(nested, key=lambda n: n.lineno):
            (self.klass if isinstance(node, ast.ClassDef) else self.function)(node, scope)

    def ha_bases(self, cls: ast.ClassDef, scope: _Scope) -> tuple[list[str], set[str]]:
        """The HA classes a class derives from (through ours too), and the names ours define."""
        found, ours = [], set(members(cls))
        for base in cls.bases:
            path = scope.path(base.value if isinstance(base, ast.Subscript) else base)
            if path and CALL not in path:  # `Entity`, `er.RegistryEntry`, `Generic[T]`
                found.append(".".join(path))
            elif isinstance(base, ast.Name) and base.id in self.classes:
                more, names = self.ha_bases(self.classes[base.id], scope)
                found, ours = found + more, ours | names
        return found, ours

    def klass(self, cls: ast.ClassDef, outer: _Scope) -> None:
        bases, ours = self.ha_bases(cls, outer)
        inherited = set()
        for base in cls.bases:
            if isinstance(base, ast.Name) and base.id in self.classes:
                inherited |= self.ha_bases(self.classes[base.id], outer)[1]
        joined = "|".join(dict.fromkeys(bases))
        scope = _Scope(outer.env, joined, frozenset(ours), frozenset(inherited))
        for node in cls.body if joined else []:
            if isinstance(node, _FUNCS) and not node.name.startswith("__"):  # dunders: Python's
                path = (joined, CALL, node.name)
                self.add(node, path, f"{cls.name}.{node.name}", override=node)
            for target in _targets(node):
                if isinstance(target, ast.Name) and target.id.startswith("_attr_"):
                    self.add(target, (joined, CALL, target.id))
        self.block(cls.body, scope)

    def function(self, func: Func, outer: _Scope) -> None:
        scope = _Scope(dict(outer.env), outer.bases, outer.ours, outer.inherited)
        args = func.args
        for arg in args.posonlyargs + args.args + args.kwonlyargs:
            annotation = arg.annotation
            if isinstance(annotation, ast.Name) and annotation.id in self.aliases:
                annotation = self.aliases[annotation.id]
            while isinstance(annotation, ast.BinOp | ast.Subscript):  # `X | None`, `X[T]`
                annotation = getattr(annotation, "left", getattr(annotation, "value", None))
            found = (
                scope.path(annotation) if isinstance(annotation, ast.Name | ast.Attribute) else None
            )
            scope.env.pop(arg.arg, None)
            if found and found[-1] != CALL:
                scope.env[arg.arg] = (*found, CALL)
        # Locals hold what they were last assigned (flow-insensitive; loop targets are no HA).
        for node in sorted(ast.walk(func), key=lambda n: getattr(n, "lineno", 0)):
            names = [*_targets(node), getattr(node, "target", None)]
            for name in (n for n in names if isinstance(n, ast.Name)):
                value = None if isinstance(node, ast.For) else getattr(node, "value", None)
                found = scope.path(value)
                scope.env.pop(name.id, None)
                if found:
                    scope.env[name.id] = found
        self.block(func.body, scope)


def collect(package: Path, root: Path) -> list[Use]:
    """Every use of HA in a package's Python files (named relative to `root`)."""
    trees = {p: ast.parse(p.read_text(encoding="utf-8")) for p in sorted(package.rglob("*.py"))}
    tops = [node for tree in trees.values() for node in tree.body]
    classes = {n.name: n for n in tops if isinstance(n, ast.ClassDef)}
    aliases = {n.name.id: n.value for n in tops if isinstance(n, ast.TypeAlias)}
    uses = []
    for path, tree in trees.items():
        collector = _Collector(path.relative_to(root).as_posix(), classes, aliases)
        env: dict[str, tuple[str, ...]] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                imports = Module(path.stem, False)
                bind(imports, [node])
                for name, qual in imports.names.items():
                    if qual.partition(".")[0] == "homeassistant":
                        env[name] = (qual,)
                        collector.add(node, (qual,), f"import {qual}")
        collector.block(tree.body, _Scope(env))
        uses += collector.uses
    return uses


def _message(call: ast.Call, replacement: bool = False) -> str:
    """A marker's text (or the replacement it names) and the version it breaks in."""
    parts = getattr(call.args[0], "values", call.args[:1]) if call.args else []
    text = "".join(str(p.value) if isinstance(p, ast.Constant) else "{…}" for p in parts)
    versions = [ast.unparse(k.value) for k in call.keywords if k.arg == "breaks_in_ha_version"]
    versions = [v.strip("'\"") for v in versions] or _VERSION.findall(text)
    text = f'deprecated, use "{text}" instead' if replacement else f'deprecated: "{text}"'
    return text + (f" (breaks in {versions[-1]})" if versions else "")


def _report(call: ast.Call) -> str | None:
    """The message of a call that reports a deprecation, else None."""
    if isinstance(call.func, ast.Call) and "deprecated_" in ast.unparse(call.func.func):
        return _message(call.func, replacement=True)  # deprecated_function(new)(old)(…)
    name = ast.unparse(call.func)
    if name in ("warnings.warn", "warn"):
        return _message(call) if "DeprecationWarning" in ast.unparse(call) else None
    return _message(call) if name.rpartition(".")[2] in REPORTERS else None


def _calls(body: list[ast.stmt], conditions: Conditions = ()) -> Iterator[tuple[Any, Conditions]]:
    """The calls in a function body, each with the `if` tests (and branches) leading to it."""
    for node in body:
        if isinstance(node, ast.If):
            yield from _calls(node.body, (*conditions, (node.test, True)))
            yield from _calls(node.orelse, (*conditions, (node.test, False)))
        elif not isinstance(node, _DEFS):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    yield from _calls([child], conditions)
                else:
                    yield from ((c, conditions) for c in ast.walk(child) if isinstance(c, ast.Call))


def _truth(test: ast.expr, values: dict[str, ast.expr]) -> bool | None:
    """Whether a test of parameters holds for their values (ours, else HA's defaults)."""
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        inner = _truth(test.operand, values)
        return None if inner is None else not inner
    if isinstance(test, ast.BoolOp):
        results = [_truth(v, values) for v in test.values]
        decisive = isinstance(test.op, ast.Or)
        return decisive if decisive in results else (None if None in results else not decisive)
    if not isinstance(test, ast.Compare) or not isinstance(test.left, ast.Name):
        return None
    value, op, right = values.get(test.left.id), test.ops[0], test.comparators[0]
    if value is None or len(test.ops) > 1:
        return None

    def same(other: ast.expr) -> bool:  # what we pass is no sentinel, nor None
        if isinstance(value, ast.Constant) and isinstance(other, ast.Constant):
            return bool(value.value == other.value)
        return ast.dump(value) == ast.dump(other)

    if isinstance(op, ast.In | ast.NotIn) and isinstance(right, ast.Tuple | ast.List | ast.Set):
        return any(map(same, right.elts)) == isinstance(op, ast.In)
    if isinstance(op, ast.Is | ast.Eq | ast.IsNot | ast.NotEq):
        return same(right) == isinstance(op, ast.Is | ast.Eq)
    return None


def _looks_at(test: ast.expr) -> set[str]:
    """Names a test looks at as they are (not their attributes, nor what calls return)."""
    if isinstance(test, ast.Name):
        return {test.id}
    parts = [*getattr(test, "values", []), getattr(test, "operand", None)]
    parts += [getattr(test, "left", None), *getattr(test, "comparators", [])]
    return set().union(*(_looks_at(p) for p in parts if isinstance(p, ast.expr)))


def markers(release: Release, target: Target, call: Call | None) -> list[str]:
    """Deprecation markers in `target`'s source that a call like ours reaches."""
    node = target.node
    if target.kind == "class" and not target.instance:
        init = release.class_member(target, "__init__")
        found = [f'deprecated class: "{d}"' for d in _decorators(node) if "deprecat" in d]
        called = Call((), (), star=True)  # constructed or subclassed: its __init__ runs
        return found + (markers(release, init, called) if isinstance(init, Target) else [])
    if target.kind != "func":
        return [target.deprecated] if target.deprecated else []
    decorators = [d for d in node.decorator_list if isinstance(d, ast.Call)]
    found = [_message(d, True) for d in decorators if "deprecated_" in ast.unparse(d.func)]
    if call is None and "property" not in _decorators(node):
        return found  # named, not called here (imported, passed on): its decorators tell
    args = node.args
    positional = [a.arg for a in args.posonlyargs + args.args]
    values = dict(
        zip(positional[len(positional) - len(args.defaults) :], args.defaults, strict=True)
    )
    values |= {a.arg: d for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d}
    ours = call.bound(release.signature(target) or ([], False, False)) if call else {}
    values |= ours
    for marker, conditions in _calls(node.body):
        text = _report(marker)
        if text is None and isinstance(marker.func, ast.Name):  # the module's own reporter
            helper = release.expression(marker.func, target)
            if isinstance(helper, Target) and helper.kind == "func":
                own = helper.module is target.module
                texts = [_report(c) for c, tests in _calls(helper.node.body) if own and not tests]
                text = next(filter(None, texts), None)
        # An unknown test counts when it looks at what we pass; HA's own state is not ours.
        truths = [(_truth(test, values), branch, test) for test, branch in conditions]
        if text and all(
            t == b if t is not None else ours.keys() & _looks_at(x) for t, b, x in truths
        ):
            found.append(text)
    return found


def _hook_reports(release: Release, bases: str, name: str) -> list[str]:
    """HA reports a deprecated hook where it looks for it: in its base classes' methods."""
    found = []
    for start in (release.lookup(base) for base in bases.split("|")):
        for owner in release.mro(start) if isinstance(start, Target) else ():
            methods = [n for n in getattr(owner.node, "body", []) if isinstance(n, _FUNCS)]
            for marker, conditions in (c for method in methods for c in _calls(method.body)):
                text = _report(marker)
                nodes = [n for t in (marker, *(t for t, _ in conditions)) for n in ast.walk(t)]
                named = name in {n.attr for n in nodes if isinstance(n, ast.Attribute)}
                said = text and text.startswith("deprecated:") and re.search(rf"\b{name}\b", text)
                if text and (named or said):
                    found.append(text)
    return found


def deprecations(release: Release, uses: list[Use]) -> list[str]:
    """What we use that `release` marks as deprecated, with the version it breaks in."""
    problems = []
    for use in uses:
        target = release.resolve(use.path)
        if not isinstance(target, Target):
            continue
        if use.override:
            notes = _hook_reports(release, use.path[0], use.override.name)
        else:
            notes = markers(release, target, use.call)
        problems += [f"{release.version}: {use.where()} — {note}" for note in dict.fromkeys(notes)]
    return problems
