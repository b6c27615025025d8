"""Provider schemas, read back from the official Python SDKs on PyPI.

The SDKs (pulumi-aws, pulumi-awsx, pulumi-command) are generated from each provider's schema.json, so they carry
the canonical type tokens, the wire names of every input and output, which inputs are required, which are plain,
and the enum values. This module turns them into small `Type` values the checker can compare against.

Everything is imported lazily and cached per process: one resource costs one module import (~0.1 s).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import functools
import importlib
import inspect
import json
import re
import sys
import typing
from importlib import metadata

from pulumi import _types as pulumi_types

# Pulumi package name -> Python distribution and import name.
PACKAGES = {
    "aws": ("pulumi-aws", "pulumi_aws"),
    "awsx": ("pulumi-awsx", "pulumi_awsx"),
    "command": ("pulumi-command", "pulumi_command"),
}


@dataclasses.dataclass(frozen=True)
class Type:
    """A schema type. kind: string|integer|number|boolean|any|asset|archive|list|map|object|enum|union."""

    kind: str
    elem: "Type | None" = None  # list/map element
    cls: typing.Any = None  # object: the SDK class (input_type or output_type)
    values: tuple = ()  # enum values; union members
    name: str = ""  # display name for objects and enums

    def __str__(self) -> str:
        if self.kind in ("list", "map"):
            return f"{self.kind}<{self.elem}>"
        if self.kind == "object":
            return f"object {self.name}"
        if self.kind == "enum":
            return f"enum {self.name}({'|'.join(map(str, self.values))})"
        if self.kind == "union":
            return " | ".join(str(v) for v in self.values)
        return self.kind


STRING, INTEGER, NUMBER, BOOLEAN, ANY = (Type(k) for k in ("string", "integer", "number", "boolean", "any"))
ASSET, ARCHIVE = Type("asset"), Type("archive")


@dataclasses.dataclass(frozen=True)
class Field:
    name: str  # wire name (camelCase)
    type: Type
    required: bool = False
    plain: bool = False  # must be known at program evaluation time (literal or config)
    deprecated: str = ""


@dataclasses.dataclass
class ResourceSchema:
    token: str  # canonical, e.g. aws:apprunner/service:Service
    package: str
    component: bool
    inputs: dict[str, Field]
    outputs: dict[str, Field]
    python: str


@dataclasses.dataclass
class FunctionSchema:
    token: str
    package: str
    args: dict[str, Field]
    returns: dict[str, Field]
    python: str


def version(package: str) -> str:
    return metadata.version(PACKAGES[package][0])


# ---------------------------------------------------------------- typing -> Type


def _is_output_ref(t) -> bool:
    return isinstance(t, typing.ForwardRef) and t.__forward_arg__.startswith("Output[")


def _is_awaitable(t) -> bool:
    return typing.get_origin(t) is collections.abc.Awaitable


def _resolve_forward(ref: typing.ForwardRef, module):
    try:
        return eval(ref.__forward_arg__, vars(module))  # noqa: S307 - names from the SDK's own annotations
    except Exception as e:  # pragma: no cover - would mean the SDK layout changed
        raise RuntimeError(f"cannot resolve {ref.__forward_arg__!r} in {module.__name__}: {e}") from e


def convert(annotation, module) -> tuple[Type, bool]:
    """Return (type, plain) for one SDK annotation. `Input[T]` is unwrapped; its absence means plain."""
    plain = True
    t = annotation
    if isinstance(t, str):
        t = _resolve_forward(typing.ForwardRef(t), module)
    if typing.get_origin(t) is typing.Union:
        members = typing.get_args(t)
        if any(_is_awaitable(m) or _is_output_ref(m) for m in members):
            plain = False
        rest = [m for m in members if m is not type(None) and not _is_awaitable(m) and not _is_output_ref(m)]
        if len(rest) == 1:
            return _convert_inner(rest[0], module), plain
        # Invoke arguments also accept a TypedDict twin (`...ArgsDict`) of their Args class: the same shape.
        members = [_convert_inner(m, module) for m in rest if not _is_typeddict(m, module)]
        return (members[0] if len(members) == 1 else _union(members)), plain
    return _convert_inner(t, module), plain


def _is_typeddict(t, module) -> bool:
    if isinstance(t, str):
        t = typing.ForwardRef(t)
    if isinstance(t, typing.ForwardRef):
        t = _resolve_forward(t, module)
    return typing.is_typeddict(t)


def _union(members: list[Type]) -> Type:
    # Union[str, SomeEnum] is an open enum: any string is accepted.
    if STRING in members and all(m.kind in ("string", "enum") for m in members):
        return STRING
    return Type("union", values=tuple(members))


def _convert_inner(t, module) -> Type:
    if isinstance(t, str):
        t = typing.ForwardRef(t)
    if isinstance(t, typing.ForwardRef):
        t = _resolve_forward(t, module)
    origin = typing.get_origin(t)
    if origin is typing.Union:
        inner, _ = convert(t, module)
        return inner
    if t is str:
        return STRING
    if t is bool:
        return BOOLEAN
    if t is int:
        return INTEGER
    if t is float:
        return NUMBER
    if t is typing.Any or t is object:
        return ANY
    if origin in (list, collections.abc.Sequence, typing.List):
        (arg,) = typing.get_args(t) or (typing.Any,)
        return Type("list", elem=_element(arg, module))
    if origin in (dict, collections.abc.Mapping, typing.Mapping, typing.Dict):
        args = typing.get_args(t)
        return Type("map", elem=_element(args[1] if args else typing.Any, module))
    if inspect.isclass(t):
        if issubclass(t, enum.Enum):
            return Type("enum", values=tuple(m.value for m in t), name=t.__name__)
        name = t.__name__
        if name in ("Asset", "FileAsset", "StringAsset", "RemoteAsset"):
            return ASSET
        if name in ("Archive", "AssetArchive", "FileArchive", "RemoteArchive"):
            return ARCHIVE
        if pulumi_types.is_input_type(t) or pulumi_types.is_output_type(t) or _props(t):
            return Type("object", cls=t, name=name)
        if t.__module__.startswith("pulumi") and "Resource" in [b.__name__ for b in t.__mro__]:
            return Type("string", name=name)  # a resource passed as a component input: treat as its id
    if isinstance(t, typing.TypeVar):
        return ANY
    raise RuntimeError(f"unsupported SDK annotation {t!r} in {module.__name__}")


def _element(arg, module) -> Type:
    inner, _ = convert(arg, module)
    return inner


def _props(cls):
    try:
        return pulumi_types._py_properties(cls)
    except Exception:
        return []


def _getter_fields(cls) -> dict[str, Field]:
    module = sys.modules[cls.__module__]
    out = {}
    for _py, wire, prop in pulumi_types._py_properties(cls):
        ann = prop.fget.__annotations__.get("return", typing.Any)
        if typing.get_origin(ann) is not None and getattr(typing.get_origin(ann), "__name__", "") == "Output":
            ann = typing.get_args(ann)[0]
        elif inspect.isclass(ann) and ann.__name__ == "Output":
            ann = typing.Any
        typ, _ = convert(ann, module)
        out[wire] = Field(wire, typ)
    return out


def _init_fields(cls) -> dict[str, Field]:
    """Inputs of an input_type (or resource Args) class: wire names from the getters, requiredness and
    plainness from the __init__ signature."""
    module = sys.modules[cls.__module__]
    wire_by_py = {py: wire for py, wire, _ in pulumi_types._py_properties(cls)}
    fields = {}
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name in ("self", "__self__") or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        wire = wire_by_py.get(p.name)
        if wire is None:
            continue
        ann = cls.__init__.__annotations__.get(p.name, typing.Any)
        typ, plain = convert(ann, module)
        doc = ""
        prop = getattr(cls, p.name, None)
        if isinstance(prop, property) and prop.fget is not None:
            doc = _deprecation(prop.fget)
        fields[wire] = Field(wire, typ, required=p.default is inspect.Parameter.empty, plain=plain, deprecated=doc)
    return fields


def _deprecation(fn) -> str:
    # The SDKs mark deprecated getters with @_utilities.deprecated("..."): the wrapper carries
    # `_pulumi_deprecated_callable` and holds the message in its closure.
    if "_pulumi_deprecated_callable" not in getattr(fn, "__dict__", {}):
        return ""
    for cell in fn.__closure__ or ():
        if isinstance(cell.cell_contents, str):
            return cell.cell_contents
    return "deprecated"


@functools.lru_cache(maxsize=None)
def object_fields(cls, for_input: bool) -> dict[str, Field]:
    if for_input and pulumi_types.is_input_type(cls):
        return _init_fields(cls)
    return _getter_fields(cls)


# ---------------------------------------------------------------- token index


@functools.lru_cache(maxsize=None)
def _registered(package: str) -> dict[str, tuple[str, str]]:
    """canonical resource token -> (python module, class name), from the SDK's _utilities.register(...) JSON."""
    mod_name = PACKAGES[package][1]
    spec = importlib.util.find_spec(mod_name)
    src = open(spec.origin, encoding="utf-8").read()
    m = re.search(r'resource_modules="""(.*?)"""', src, re.S)
    tokens = {}
    for entry in json.loads(m.group(1)) if m else []:
        for token, cls in entry["classes"].items():
            tokens[token] = (entry["fqn"], cls)
    return tokens


def _alias_keys(token: str) -> list[str]:
    """All spellings pulumi-yaml accepts for a canonical token, lower-cased."""
    pkg, mod, member = token.split(":")
    keys = [token.lower()]
    base = mod.split("/")[0]
    keys.append(f"{pkg}:{base}:{member}".lower())
    if base == "index":
        keys.append(f"{pkg}:{member}".lower())
    return keys


@functools.lru_cache(maxsize=None)
def _resource_index(package: str) -> dict[str, str]:
    index = {}
    for token in _registered(package):
        for key in _alias_keys(token):
            index.setdefault(key, token)
    return index


def canonical_resource_token(token: str) -> str | None:
    package = token.split(":")[0]
    if package not in PACKAGES:
        return None
    return _resource_index(package).get(token.lower())


@functools.lru_cache(maxsize=None)
def resource(token: str) -> ResourceSchema | None:
    """Schema of a resource type token (any accepted spelling), or of `pulumi:providers:<pkg>`."""
    if token.startswith("pulumi:providers:"):
        package = token.split(":")[2]
        if package not in PACKAGES:
            return None
        root = importlib.import_module(PACKAGES[package][1])
        cls, args = root.Provider, root.ProviderArgs
        return ResourceSchema(token, package, False, _init_fields(args), _getter_fields(cls), f"{cls.__module__}.Provider")
    canonical = canonical_resource_token(token)
    if canonical is None:
        return None
    package = canonical.split(":")[0]
    fqn, cls_name = _registered(package)[canonical]
    module = importlib.import_module(fqn)
    cls = getattr(module, cls_name)
    # The SDK names a resource's inputs `<Name>InitArgs` where a nested type already took `<Name>Args`
    # (aws:s3:BucketVersioning, whose `BucketVersioningArgs` is an input type of aws:s3:Bucket).
    resource_module = sys.modules[cls.__module__]
    args_cls = getattr(resource_module, f"{cls_name}InitArgs", None) or getattr(resource_module, f"{cls_name}Args")
    import pulumi

    component = issubclass(cls, pulumi.ComponentResource)
    outputs = _getter_fields(cls)
    outputs.setdefault("urn", Field("urn", STRING))
    if not component:
        outputs.setdefault("id", Field("id", STRING))
    return ResourceSchema(canonical, package, component, _init_fields(args_cls), outputs, f"{cls.__module__}.{cls_name}")


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


@functools.lru_cache(maxsize=None)
def function(token: str) -> FunctionSchema | None:
    """Schema of an invoke token: `aws:getRegion`, `aws:ecr:getAuthorizationToken`, or the canonical form."""
    parts = token.split(":")
    if parts[0] not in PACKAGES or len(parts) not in (2, 3):
        return None
    package = parts[0]
    mod, member = ("index", parts[1]) if len(parts) == 2 else (parts[1].split("/")[0], parts[2])
    root = PACKAGES[package][1]
    py_mod = root if mod == "index" else f"{root}.{mod.replace('/', '.')}"
    try:
        module = importlib.import_module(py_mod)
    except ImportError:
        return None
    fn = getattr(module, _snake(member), None)
    if fn is None or not callable(fn):
        return None
    src_module = sys.modules[fn.__module__]
    src = open(src_module.__file__, encoding="utf-8").read()
    m = re.search(r"invoke\('([^']+)'", src)
    if not m or m.group(1).split(":")[-1].lower() != member.lower():
        return None
    canonical = m.group(1)
    if token.lower() not in _alias_keys(canonical):
        return None
    wire_by_py = {py: wire for wire, py in re.findall(r"__args__\['(\w+)'\] = (\w+)", src)}
    args = {}
    for p in inspect.signature(fn).parameters.values():
        if p.name == "opts" or p.name not in wire_by_py:
            continue
        typ, _ = convert(fn.__annotations__.get(p.name, typing.Any), src_module)
        args[wire_by_py[p.name]] = Field(wire_by_py[p.name], typ, required=p.default is inspect.Parameter.empty)
    result_cls = fn.__annotations__.get("return")
    result_cls = next(c for c in result_cls.__mro__ if pulumi_types.is_output_type(c)) if result_cls else None
    returns = _getter_fields(result_cls) if result_cls else {}
    return FunctionSchema(canonical, package, args, returns, f"{fn.__module__}.{fn.__name__}")
