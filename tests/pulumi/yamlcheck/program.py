"""Offline type check of a Pulumi YAML program against the provider schemas in the official SDKs.

What it checks, each with a diagnostic code the tests assert on:
  toplevel          unknown top-level keys, runtime other than yaml, missing name
  duplicate-key     a mapping key given twice (YAML keeps the last one silently)
  duplicate-name    a name used by two of config / variables / resources
  config            config types (string|integer|boolean|array|object), defaults of the declared type,
                    array items; stack-file keys that are not declared or not provider settings
  unknown-type      a resource type or invoke function that no pinned SDK defines
  unknown-property  an input name (at any depth, inside lists and maps too) that the schema does not define
  missing-required  a required input left out (at any depth)
  type-mismatch     a value of the wrong scalar/collection type (strings are not numbers; lists are not objects)
  enum              a literal outside a closed enum
  plain             a plain (prompt) input fed from a resource output
  reference         `${...}` naming nothing, or an output path that does not exist on the referenced type
  interpolation     malformed `${...}`
  builtin           unknown `fn::` functions and malformed built-in arguments
  invoke            unknown invoke arguments/return fields, invokes hidden from the default provider
  option            options outside `options:`, unknown options, bad dependsOn/provider/parent targets,
                    ignoreChanges naming no input, version conflicts with the default provider
  cycle             resources/variables that depend on each other
  aws-name          a name built from the stack/project name that AWS would reject for one of the known
                    stack names (see names.py)
  deprecated        (warning) use of a deprecated input
"""

from __future__ import annotations

import dataclasses
import difflib
import pathlib
import re
import typing

import yaml

from . import names as N
from . import sdkschema as S
from .sdkschema import ANY, ARCHIVE, ASSET, BOOLEAN, INTEGER, NUMBER, STRING, Field, Type

TOP_LEVEL = {
    "name", "runtime", "description", "config", "variables", "resources", "outputs", "main", "stackConfigDir",
    "backend", "options", "template", "plugins", "packages", "author", "license", "website",
}
RESOURCE_KEYS = {"type", "name", "properties", "options", "get", "defaultProvider"}
OPTION_KEYS = {
    "additionalSecretOutputs", "aliases", "customTimeouts", "deleteBeforeReplace", "dependsOn", "ignoreChanges",
    "import", "parent", "protect", "provider", "providers", "version", "pluginDownloadURL", "replaceOnChanges",
    "retainOnDelete", "replaceWith", "deletedWith", "hideDiffs", "replacementTrigger", "envVarMappings",
}
CONFIG_TYPES = {"string", "integer", "boolean", "array", "object"}
CONFIG_KEYS = {"type", "default", "secret", "description", "items", "value"}
PULUMI_BUILTIN = {k: Field(k, STRING) for k in ("stack", "project", "organization", "cwd", "rootDirectory")}
RESOURCE_REF = Type("resource")


@dataclasses.dataclass(frozen=True)
class Diagnostic:
    severity: str  # error | warning
    code: str
    path: str
    message: str
    line: int = 0

    def __str__(self) -> str:
        return f"{self.severity}: line {self.line}: {self.path}: [{self.code}] {self.message}"


# ---------------------------------------------------------------- YAML with positions


class _Doc:
    """Plain Python values plus the line of every path, duplicate keys recorded."""

    def __init__(self, text: str):
        self.lines: dict[str, int] = {}
        self.duplicates: list[tuple[str, int]] = []
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        self.value = self._convert(node, "") if node is not None else {}

    def _convert(self, node, path):
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out = {}
            for k, v in node.value:
                key = str(self._scalar(k))
                sub = f"{path}.{key}" if path else key
                if key in out:
                    self.duplicates.append((sub, k.start_mark.line + 1))
                self.lines[sub] = k.start_mark.line + 1
                out[key] = self._convert(v, sub)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._convert(v, f"{path}[{i}]") for i, v in enumerate(node.value)]
        return self._scalar(node)

    @staticmethod
    def _scalar(node):
        return yaml.SafeLoader(" ").construct_object(node, deep=True)


# ---------------------------------------------------------------- ${...} parsing


@dataclasses.dataclass(frozen=True)
class Ref:
    root: str
    accessors: tuple  # str (property) or int (index)
    text: str


_NAME_END = set(".[}")


def parse_interpolation(s: str) -> tuple[list[str | Ref], str | None]:
    """Split a string into literal parts and references; return (parts, error)."""
    parts: list[str | Ref] = []
    lit = []
    i = 0
    while i < len(s):
        if s.startswith("$${", i):
            lit.append("${")
            i += 3
            continue
        if s.startswith("${", i):
            if lit:
                parts.append("".join(lit))
                lit = []
            j = i + 2
            accessors: list = []
            root = None
            while True:
                if j >= len(s):
                    return parts, f"unterminated interpolation in {s!r}"
                c = s[j]
                if c == "}":
                    j += 1
                    break
                if c == ".":
                    j += 1
                    continue
                if c == "[":
                    if j + 1 < len(s) and s[j + 1] == '"':
                        end = s.find('"]', j + 2)
                        if end < 0:
                            return parts, f"missing closing quote or bracket in {s!r}"
                        key = s[j + 2:end]
                        j = end + 2
                    else:
                        end = s.find("]", j)
                        if end < 0:
                            return parts, f"missing closing bracket in {s!r}"
                        try:
                            key = int(s[j + 1:end])
                        except ValueError:
                            return parts, f"invalid list index {s[j + 1:end]!r} in {s!r}"
                        if root is None:
                            return parts, f"the root of {s!r} must be a name"
                        j = end + 1
                    if root is None:
                        root = key
                    else:
                        accessors.append(key)
                    continue
                k = j
                while k < len(s) and s[k] not in _NAME_END:
                    k += 1
                name = s[j:k]
                if not name:
                    return parts, f"empty name in {s!r}"
                if root is None:
                    root = name
                else:
                    accessors.append(name)
                j = k
            if root is None:
                return parts, f"empty interpolation in {s!r}"
            parts.append(Ref(root, tuple(accessors), s[i:j]))
            i = j
            continue
        lit.append(s[i])
        i += 1
    if lit:
        parts.append("".join(lit))
    return parts, None


def refs_in(value) -> list[Ref]:
    """Every reference anywhere in a value (used by the policy tests too)."""
    out = []
    if isinstance(value, str):
        parts, _ = parse_interpolation(value)
        out.extend(p for p in parts if isinstance(p, Ref))
    elif isinstance(value, list):
        for v in value:
            out.extend(refs_in(v))
    elif isinstance(value, dict):
        for v in value.values():
            out.extend(refs_in(v))
    return out


# ---------------------------------------------------------------- the checker


def _fields_of(t: Type) -> dict[str, Field] | None:
    if t.kind != "object":
        return None
    if isinstance(t.cls, dict):
        return t.cls
    return S.object_fields(t.cls, True)


def _record(fields: dict[str, Field], name: str) -> Type:
    return Type("object", cls=_Frozen(fields), name=name)


class _Frozen(dict):
    """A hashable dict, so record types can live in frozen dataclasses."""

    def __hash__(self):  # identity hash is enough: records are never compared by value
        return id(self)


def _suggest(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Checker:
    def __init__(self, program_path: pathlib.Path, stack_files: typing.Iterable[pathlib.Path] = (),
                 stack_names: typing.Iterable[str] = ()):
        self.path = pathlib.Path(program_path)
        self.doc = _Doc(self.path.read_text(encoding="utf-8"))
        self.program = self.doc.value if isinstance(self.doc.value, dict) else {}
        self.stack_files = [pathlib.Path(p) for p in stack_files]
        # Stack names the AWS name rules are checked for: Pulumi.<stack>.yaml beside the program, plus any given.
        self.stack_names = [f.name[len("Pulumi."):-len(".yaml")] for f in self.stack_files
                            if f.name.startswith("Pulumi.") and f.name.endswith(".yaml")] + list(stack_names)
        self.diags: list[Diagnostic] = []
        self.config: dict[str, Type] = {}
        self.config_values: dict[str, list] = {}  # config name -> literal values it may take (default, stack files)
        self.stack_config: dict[str, Type] = {}
        self.variables: dict = {}
        self.resources: dict = {}
        self.schemas: dict[str, S.ResourceSchema | None] = {}
        self.var_types: dict[str, Type | None] = {}
        self._var_stack: list[str] = []
        self.edges: dict[str, set[str]] = {}
        self.default_providers: dict[str, str] = {}  # package -> provider resource name
        self._current: str | None = None  # node whose references are being recorded

    # -- diagnostics
    def err(self, code: str, path: str, msg: str, severity: str = "error"):
        line = self._line(path)
        self.diags.append(Diagnostic(severity, code, path, msg, line))

    def _line(self, path: str) -> int:
        p = path
        while p:
            if p in self.doc.lines:
                return self.doc.lines[p]
            p = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", p) if re.search(r"(\.[^.\[]*|\[\d+\])$", p) else ""
        return 0

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diags if d.severity == "error"]

    # -- entry point
    def run(self) -> list[Diagnostic]:
        for path, line in self.doc.duplicates:
            self.diags.append(Diagnostic("error", "duplicate-key", path, "key given twice; YAML keeps only the last", line))
        self._top_level()
        self._collect_config()
        self._collect_stack_config()
        self.variables = self.program.get("variables") or {}
        self.resources = self.program.get("resources") or {}
        if not isinstance(self.variables, dict):
            self.err("toplevel", "variables", "variables must be a mapping")
            self.variables = {}
        if not isinstance(self.resources, dict):
            self.err("toplevel", "resources", "resources must be a mapping")
            self.resources = {}
        self._names()
        for name, res in self.resources.items():
            self.schemas[name] = self._resource_schema(name, res)
        self._default_providers()
        for name in self.variables:
            self._current = f"variables.{name}"
            self.edges.setdefault(self._current, set())
            self.var_type(name)
        self._invoke_placement()
        for name, res in self.resources.items():
            self._current = f"resources.{name}"
            self.edges.setdefault(self._current, set())
            self._resource(name, res)
        self._current = None
        for name, value in (self.program.get("outputs") or {}).items():
            self.check(value, None, f"outputs.{name}")
        self._cycles()
        self._aws_names()
        return self.diags

    # -- AWS name rules for names built from the stack name
    def _aws_names(self):
        project = str(self.program.get("name") or "")
        for stack in self.stack_names:
            if not N.PULUMI_STACK.fullmatch(stack):
                self.err("aws-name", "stack", f"{stack!r} is not a Pulumi stack name ([A-Za-z0-9_.-], 1-100)")
        for name, res in self.resources.items():
            schema = self.schemas.get(name)
            props = res.get("properties") if isinstance(res, dict) else None
            if schema is None or not isinstance(props, dict):
                continue
            for prop, value in props.items():
                rule = N.rule_for(schema.token, prop)
                if rule is None or not isinstance(value, str):
                    continue
                parts, error = parse_interpolation(value)
                refs = [p for p in parts if isinstance(p, Ref)]
                if error or any(self._rendered(r, "stack", project) is None for r in refs):
                    continue  # depends on something only a deployment knows
                for stack in self.stack_names if refs else [None]:
                    rendered = "".join(p if isinstance(p, str) else self._rendered(p, stack, project) for p in parts)
                    problem = rule.problem(rendered)
                    if problem:
                        where = f" for stack {stack!r}" if stack is not None else ""
                        self.err("aws-name", f"resources.{name}.properties.{prop}",
                                 f"{prop} would be {rendered!r}{where}: {problem}")

    def _rendered(self, ref: Ref, stack: str, project: str) -> str | None:
        """What a reference in a name stands for: the stack or project name, or the longest value of a resource
        output listed in OUTPUT_SAMPLES; None for anything else."""
        if ref.root == "pulumi":
            return {("stack",): stack, ("project",): project}.get(ref.accessors)
        res = self.resources.get(ref.root)
        kind = res.get("type") if isinstance(res, dict) else None
        if not isinstance(kind, str) or len(ref.accessors) != 1:
            return None
        return N.OUTPUT_SAMPLES.get((kind.lower(), ref.accessors[0]))

    # -- top level, names, config
    def _top_level(self):
        if not isinstance(self.doc.value, dict):
            self.err("toplevel", "", "a program must be a mapping")
            return
        for key in self.program:
            if key not in TOP_LEVEL:
                self.err("toplevel", key, f"unknown top-level key {key!r}{_suggest(key, TOP_LEVEL)}")
        if not self.program.get("name"):
            self.err("toplevel", "name", "the project needs a name")
        if self.program.get("runtime") not in ("yaml", {"name": "yaml"}) and not (
            isinstance(self.program.get("runtime"), dict) and self.program["runtime"].get("name") == "yaml"
        ):
            self.err("toplevel", "runtime", "runtime must be yaml")

    def _collect_config(self):
        for key, decl in (self.program.get("config") or {}).items():
            path = f"config.{key}"
            if ":" in key and not key.startswith(f"{self.program.get('name')}:"):
                self._provider_config_key(key, path)
                if isinstance(decl, dict) and "type" in decl:
                    self.config[key] = self._config_type(decl, path)
                continue
            name = key.split(":", 1)[-1]
            if not isinstance(decl, dict):
                self.config[name] = self._literal_type(decl)
                self.config_values.setdefault(name, []).append((decl, path))
                continue
            for k in decl:
                if k not in CONFIG_KEYS:
                    self.err("config", f"{path}.{k}", f"unknown config attribute {k!r}{_suggest(k, CONFIG_KEYS)}")
            if "type" not in decl and "default" not in decl:
                self.err("config", path, "give a type or a default")
            if "default" in decl:
                self.config_values.setdefault(name, []).append((decl["default"], f"{path}.default"))
            self.config[name] = self._config_type(decl, path)

    def _config_type(self, decl: dict, path: str) -> Type:
        typ = decl.get("type")
        if typ is None:
            return self._literal_type(decl.get("default"))
        if typ not in CONFIG_TYPES:
            self.err("config", f"{path}.type", f"config type {typ!r} is not one of {sorted(CONFIG_TYPES)}")
            return ANY
        if typ == "array":
            items = decl.get("items")
            if not isinstance(items, dict) or "type" not in items:
                self.err("config", path, "an array config needs items: {type: ...}")
                t = Type("list", elem=ANY)
            else:
                t = Type("list", elem=self._config_type(items, f"{path}.items"))
        else:
            t = {"string": STRING, "integer": INTEGER, "boolean": BOOLEAN, "object": Type("map", elem=ANY)}[typ]
        if "default" in decl and not self._literal_fits(decl["default"], t):
            self.err("config", f"{path}.default", f"default {decl['default']!r} is not of type {typ}")
        return t

    @staticmethod
    def _literal_type(v) -> Type:
        if isinstance(v, bool):
            return BOOLEAN
        if isinstance(v, int):
            return INTEGER
        if isinstance(v, float):
            return NUMBER
        if isinstance(v, list):
            return Type("list", elem=ANY)
        if isinstance(v, dict):
            return Type("map", elem=ANY)
        return STRING

    def _literal_fits(self, v, t: Type) -> bool:
        if t.kind == "list":
            return isinstance(v, list) and all(self._literal_fits(x, t.elem) for x in v)
        if t.kind == "map":
            return isinstance(v, dict)
        if t.kind == "string":
            return isinstance(v, str)
        if t.kind == "integer":
            return isinstance(v, int) and not isinstance(v, bool)
        if t.kind == "boolean":
            return isinstance(v, bool)
        return True

    def _provider_config_key(self, key: str, path: str):
        package, setting = key.split(":", 1)
        schema = S.resource(f"pulumi:providers:{package}") if package in S.PACKAGES else None
        if schema is None:
            self.err("config", path, f"{key!r} names no provider of a pinned package")
        elif setting not in schema.inputs:
            self.err("config", path, f"{setting!r} is not a setting of provider {package}{_suggest(setting, schema.inputs)}")

    def _collect_stack_config(self):
        project = self.program.get("name")
        for f in self.stack_files:
            data = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
            for key, value in (data.get("config") or {}).items():
                path = f"{f.name}:config.{key}"
                pkg, _, name = key.rpartition(":")
                if not pkg or pkg == project:
                    if name not in self.config:
                        self.err("config", path, f"{key!r} is not declared in the program's config")
                    elif not self._literal_fits(value, self.config[name]):
                        self.err("config", path, f"{key!r} = {value!r} does not fit type {self.config[name]}")
                    else:
                        self.config_values.setdefault(name, []).append((value, path))
                else:
                    self._provider_config_key(key, path)
                    self.stack_config[key] = self._literal_type(value)

    def _names(self):
        seen: dict[str, str] = {}
        for section, names in (("config", self.config), ("variables", self.variables), ("resources", self.resources)):
            for name in names:
                if name in seen:
                    self.err("duplicate-name", f"{section}.{name}", f"{name!r} is also defined in {seen[name]}")
                seen[name] = section

    # -- resources
    def _resource_schema(self, name: str, res) -> S.ResourceSchema | None:
        path = f"resources.{name}"
        if not isinstance(res, dict):
            self.err("toplevel", path, "a resource must be a mapping")
            return None
        token = res.get("type")
        if not isinstance(token, str):
            self.err("unknown-type", f"{path}.type", "missing resource type")
            return None
        schema = S.resource(token)
        if schema is None:
            self.err("unknown-type", f"{path}.type", f"unknown resource type {token!r} in the pinned SDKs")
        return schema

    def _default_providers(self):
        for name, res in self.resources.items():
            if not isinstance(res, dict):
                continue
            token = res.get("type", "")
            if res.get("defaultProvider") is True:
                if not str(token).startswith("pulumi:providers:"):
                    self.err("option", f"resources.{name}.defaultProvider", "defaultProvider is only for provider resources")
                else:
                    self.default_providers[token.split(":")[2]] = name

    def _resource(self, name: str, res):
        path = f"resources.{name}"
        schema = self.schemas.get(name)
        if not isinstance(res, dict):
            return
        for key in res:
            if key not in RESOURCE_KEYS:
                hint = " (a resource option: move it under options:)" if key in OPTION_KEYS else _suggest(key, RESOURCE_KEYS)
                self.err("option", f"{path}.{key}", f"unknown resource key {key!r}, which Pulumi ignores{hint}")
        props = res.get("properties")
        if "get" in res:
            self.check(res["get"], None, f"{path}.get")
        elif schema is not None:
            if isinstance(props, str):
                self.check(props, Type("map", elem=ANY), f"{path}.properties")
            else:
                self._object(props or {}, schema.inputs, f"{path}.properties", schema.token)
        elif props is not None:
            self.check(props, None, f"{path}.properties")
        self._options(name, res.get("options"), schema, f"{path}.options")

    def _options(self, name: str, opts, schema: S.ResourceSchema | None, path: str):
        res_pkg = schema.package if schema else None
        is_provider = schema is not None and schema.token.startswith("pulumi:providers:")
        if opts is None:
            opts = {}
        if not isinstance(opts, dict):
            self.err("option", path, "options must be a mapping")
            return
        for key, value in opts.items():
            p = f"{path}.{key}"
            if key not in OPTION_KEYS:
                self.err("option", p, f"unknown resource option {key!r}{_suggest(key, OPTION_KEYS)}")
                continue
            if key in ("dependsOn", "replaceWith", "providers"):
                targets = value if isinstance(value, list) else [value]
                if not isinstance(value, list) and not (isinstance(value, str) and value.startswith("${")):
                    self.err("option", p, f"{key} must be a list of resource references")
                for i, t in enumerate(targets):
                    target = self._resource_target(t, f"{p}[{i}]" if isinstance(value, list) else p, key)
                    if key == "providers" and target and not str(self.resources[target].get("type", "")).startswith("pulumi:providers:"):
                        self.err("option", f"{p}[{i}]", f"{target!r} is not a provider resource")
            elif key in ("provider", "parent", "deletedWith"):
                target = self._resource_target(value, p, key)
                if key == "provider" and target:
                    ttype = str(self.resources[target].get("type", ""))
                    if not ttype.startswith("pulumi:providers:"):
                        self.err("option", p, f"{target!r} is not a provider resource")
                    elif res_pkg and ttype.split(":")[2] != res_pkg:
                        self.err("option", p, f"provider {target!r} is for {ttype.split(':')[2]}, not {res_pkg}")
                    if schema is not None and schema.component:
                        self.err("option", p, "a component takes `providers:` (a list), not `provider:`")
            elif key in ("ignoreChanges", "replaceOnChanges", "hideDiffs"):
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    self.err("option", p, f"{key} must be a list of property paths")
                elif schema is not None:
                    for i, v in enumerate(value):
                        root = re.split(r"[.\[]", v, maxsplit=1)[0]
                        if root not in schema.inputs and root != "*":
                            self.err("option", f"{p}[{i}]", f"{v!r} names no input of {schema.token}{_suggest(root, schema.inputs)}")
            elif key == "additionalSecretOutputs":
                for i, v in enumerate(value if isinstance(value, list) else []):
                    if schema is not None and v not in schema.outputs:
                        self.err("option", f"{p}[{i}]", f"{v!r} names no output of {schema.token}")
            elif key in ("protect", "deleteBeforeReplace", "retainOnDelete"):
                if not isinstance(value, bool):
                    self.err("option", p, f"{key} must be a boolean literal")
            elif key == "customTimeouts":
                if not isinstance(value, dict):
                    self.err("option", p, "customTimeouts must be a mapping")
                    continue
                for k, v in value.items():
                    if k not in ("create", "update", "delete", "read"):
                        self.err("option", f"{p}.{k}", f"unknown timeout {k!r}")
                    elif not isinstance(v, str) or not re.fullmatch(r"(\d+(\.\d+)?(ns|us|ms|s|m|h))+", v):
                        self.err("option", f"{p}.{k}", f"timeout {v!r} must be a duration string such as 20m")
            elif key == "version":
                if not isinstance(value, str) or not re.fullmatch(r"\d+\.\d+\.\d+([-+].*)?", value):
                    self.err("option", p, "version must be a semver string")
                elif res_pkg and not is_provider and res_pkg in self.default_providers and "provider" not in opts:
                    dp = self.resources[self.default_providers[res_pkg]].get("options") or {}
                    if dp.get("version") != value:
                        self.err("option", p, f"version {value} conflicts with default provider version {dp.get('version')}")
            else:
                self.check(value, None, p)
        if is_provider and self.resources[name].get("defaultProvider") and "version" not in opts:
            self.err("option", path, "a default provider must pin options.version")

    def _resource_target(self, value, path: str, what: str) -> str | None:
        if not isinstance(value, str):
            self.err("option", path, f"{what} must be a resource reference like ${{name}}")
            return None
        parts, error = parse_interpolation(value)
        if error or len(parts) != 1 or not isinstance(parts[0], Ref) or parts[0].accessors:
            self.err("option", path, f"{what} must be a whole-resource reference like ${{name}}, got {value!r}")
            return None
        root = parts[0].root
        if root not in self.resources:
            self.err("reference", path, f"{what} names no resource {root!r}{_suggest(root, self.resources)}")
            return None
        self._edge(f"resources.{root}")
        return root

    # -- variables
    def var_type(self, name: str) -> Type | None:
        if name in self.var_types:
            return self.var_types[name]
        if name in self._var_stack:
            return None  # the cycle is reported by _cycles
        self._var_stack.append(name)
        saved = self._current
        self._current = f"variables.{name}"
        self.edges.setdefault(self._current, set())
        t = self.check(self.variables[name], None, f"variables.{name}")
        self._current = saved
        self._var_stack.pop()
        self.var_types[name] = t
        return t

    def _invoke_placement(self):
        """pulumi-yaml hands an invoke to the default provider only when it is a variable's whole value."""

        def walk(v, path, top):
            if isinstance(v, dict):
                spec = v.get("fn::invoke")
                if isinstance(spec, dict) and not top:
                    pkg = str(spec.get("function", "")).split(":")[0]
                    opts = spec.get("options") or {}
                    if pkg in self.default_providers and "provider" not in opts:
                        self.err("invoke", path, f"this {pkg} invoke is nested, so it bypasses the default provider "
                                 f"{self.default_providers[pkg]!r}: make it a variable's whole value")
                for k, x in v.items():
                    walk(x, f"{path}.{k}", False)
            elif isinstance(v, list):
                for i, x in enumerate(v):
                    walk(x, f"{path}[{i}]", False)

        for name, value in self.variables.items():
            walk(value, f"variables.{name}", True)
        for name, res in self.resources.items():
            if isinstance(res, dict):
                walk(res.get("properties"), f"resources.{name}.properties", False)
        for name, value in (self.program.get("outputs") or {}).items():
            walk(value, f"outputs.{name}", False)

    # -- values
    def _edge(self, target: str):
        if self._current:
            self.edges.setdefault(self._current, set()).add(target)

    def check(self, value, expected: Type | None, path: str, plain: bool = False) -> Type | None:
        """Check a value against an expected type; return the value's own type (None when unknown)."""
        if plain and self._has_resource_ref(value):
            self.err("plain", path, "a plain input must be a literal or config, not a resource output")
        actual: Type | None
        if value is None:
            return None
        if isinstance(value, bool):
            actual = BOOLEAN
        elif isinstance(value, int):
            actual = INTEGER
        elif isinstance(value, float):
            actual = NUMBER
        elif isinstance(value, str):
            return self._string(value, expected, path)
        elif isinstance(value, list):
            elem = expected.elem if expected is not None and expected.kind == "list" else None
            if expected is not None and expected.kind not in ("list", "any", "union"):
                self.err("type-mismatch", path, f"expected {expected}, got a list")
                elem = None
            if expected is not None and expected.kind == "union":
                elem = next((m.elem for m in expected.values if m.kind == "list"), None)
            types = [self.check(v, elem, f"{path}[{i}]") for i, v in enumerate(value)]
            first = next((t for t in types if t is not None), ANY)
            return Type("list", elem=first)
        elif isinstance(value, dict):
            if len(value) == 1 and str(next(iter(value))).lower().startswith("fn::"):
                actual = self._builtin(value, path)
            else:
                return self._mapping(value, expected, path)
        else:
            actual = STRING
        if expected is not None and actual is not None and not self.assignable(actual, expected):
            self.err("type-mismatch", path, f"expected {expected}, got {actual}")
        return actual

    def _mapping(self, value: dict, expected: Type | None, path: str) -> Type:
        if expected is not None and expected.kind == "union":
            expected = next((m for m in expected.values if m.kind in ("object", "map")), expected)
        if expected is None or expected.kind == "any":
            fields = {k: Field(k, self.check(v, None, f"{path}.{k}") or ANY) for k, v in value.items()}
            return _record(fields, "object")
        if expected.kind == "map":
            for k, v in value.items():
                self.check(v, expected.elem, f"{path}.{k}")
            return expected
        if expected.kind == "object":
            self._object(value, _fields_of(expected), path, expected.name)
            return expected
        self.err("type-mismatch", path, f"expected {expected}, got an object")
        for k, v in value.items():
            self.check(v, None, f"{path}.{k}")
        return Type("map", elem=ANY)

    def _object(self, value, fields: dict[str, Field], path: str, owner: str):
        if not isinstance(value, dict):
            self.check(value, Type("map", elem=ANY), path)
            return
        for key, v in value.items():
            field = fields.get(key)
            if field is None:
                self.err("unknown-property", f"{path}.{key}", f"{owner} has no input {key!r}{_suggest(key, fields)}")
                self.check(v, None, f"{path}.{key}")
                continue
            if field.deprecated:
                self.err("deprecated", f"{path}.{key}", field.deprecated, severity="warning")
            self.check(v, field.type, f"{path}.{key}", plain=field.plain)
        for name, field in fields.items():
            if field.required and name not in value:
                self.err("missing-required", path, f"{owner} requires input {name!r}")

    def _string(self, s: str, expected: Type | None, path: str) -> Type | None:
        parts, error = parse_interpolation(s)
        if error:
            self.err("interpolation", path, error)
            return STRING
        refs = [p for p in parts if isinstance(p, Ref)]
        types = [self.resolve(r, path) for r in refs]
        if len(parts) == 1 and refs:
            actual = types[0]
            if actual is RESOURCE_REF and expected is not None and expected.kind not in ("any",):
                self.err("type-mismatch", path,
                         f"{refs[0].text} is a whole resource (Pulumi would pass its URN); reference one of its outputs")
                return None
            if actual is not None and expected is not None and not self.assignable(actual, expected):
                self.err("type-mismatch", path, f"expected {expected}, got {actual} from {refs[0].text}")
            elif expected is not None and expected.kind == "enum" and not refs[0].accessors:
                # A config value flowing into a closed enum: its default and stack values must be members.
                for v, where in self.config_values.get(refs[0].root, []):
                    if v not in expected.values:
                        self.err("enum", path, f"{refs[0].text} can be {v!r} (from {where}), not one of {list(expected.values)}")
            return actual
        for r, t in zip(refs, types):
            if t is not None and t.kind in ("list", "object", "map") and expected is not None:
                self.err("type-mismatch", path, f"{r.text} is {t}; it cannot be interpolated into a string")
        if not refs and expected is not None:
            target = expected
            if target.kind == "union":
                target = next((m for m in target.values if m.kind in ("string", "enum", "any")), target)
            if target.kind == "enum" and s not in target.values:
                self.err("enum", path, f"{s!r} is not one of {list(target.values)}")
                return STRING
        if expected is not None and not self.assignable(STRING, expected):
            self.err("type-mismatch", path, f"expected {expected}, got string {s!r}")
        return STRING

    # -- references
    def resolve(self, ref: Ref, path: str) -> Type | None:
        root = ref.root
        if root == "pulumi":
            t = _record(PULUMI_BUILTIN, "pulumi")
        elif root in self.resources:
            self._edge(f"resources.{root}")
            schema = self.schemas.get(root)
            if schema is None:
                return None
            if not ref.accessors:
                return RESOURCE_REF
            t = _record(schema.outputs, schema.token)
        elif root in self.variables:
            self._edge(f"variables.{root}")
            t = self.var_type(root)
        elif root in self.config:
            t = self.config[root]
        elif root in self.stack_config:
            t = self.stack_config[root]
        else:
            known = list(self.resources) + list(self.variables) + list(self.config) + ["pulumi"]
            self.err("reference", path, f"{ref.text}: nothing is named {root!r}{_suggest(root, known)}")
            return None
        walked = root
        for acc in ref.accessors:
            if t is None or t.kind == "any":
                return None
            if isinstance(acc, int):
                if t.kind != "list":
                    self.err("reference", path, f"{ref.text}: {walked} is {t}, not a list; it cannot be indexed")
                    return None
                t = t.elem
            else:
                if t.kind == "map":
                    t = t.elem
                elif t.kind == "object":
                    fields = t.cls if isinstance(t.cls, dict) else S.object_fields(t.cls, False)
                    if acc not in fields:
                        hint = _suggest(acc, fields)
                        self.err("reference", path, f"{ref.text}: {t.name} has no output {acc!r}{hint}")
                        return None
                    t = fields[acc].type
                elif t.kind == "list":
                    self.err("reference", path, f"{ref.text}: {walked} is a list; index it before reading {acc!r}")
                    return None
                else:
                    self.err("reference", path, f"{ref.text}: {walked} is {t}; it has no property {acc!r}")
                    return None
            walked += f"[{acc}]" if isinstance(acc, int) else f".{acc}"
        return t

    def _has_resource_ref(self, value, seen=None) -> bool:
        seen = seen or set()
        for r in refs_in(value):
            if r.root in self.resources:
                return True
            if r.root in self.variables and r.root not in seen:
                seen.add(r.root)
                if self._has_resource_ref(self.variables[r.root], seen):
                    return True
        return False

    # -- assignability
    def assignable(self, actual: Type, expected: Type) -> bool:
        if expected.kind == "any" or actual.kind == "any":
            return True
        if expected.kind == "union":
            return any(self.assignable(actual, m) for m in expected.values)
        if actual.kind == "union":
            return any(self.assignable(m, expected) for m in actual.values)
        if actual is RESOURCE_REF:
            return False
        if expected.kind == "string":
            return actual.kind in ("string", "integer", "number", "boolean", "enum")
        if expected.kind == "enum":
            return actual.kind in ("string", "enum")
        if expected.kind in ("integer", "number"):  # pulumi-yaml's analyser treats the two as one
            return actual.kind in ("integer", "number")
        if expected.kind == "boolean":
            return actual.kind == "boolean"
        if expected.kind == "list":
            return actual.kind == "list" and self.assignable(actual.elem or ANY, expected.elem or ANY)
        if expected.kind == "map":
            if actual.kind == "map":
                return self.assignable(actual.elem or ANY, expected.elem or ANY)
            return actual.kind == "object"
        if expected.kind == "object":
            return actual.kind in ("object", "map")
        if expected.kind == "asset":  # as in pulumi-yaml: some asset inputs take archives too
            return actual.kind in ("asset", "archive")
        if expected.kind == "archive":
            return actual.kind == "archive"
        return False

    # -- built-in functions
    def _builtin(self, value: dict, path: str) -> Type | None:
        key = next(iter(value))
        arg = value[key]
        name = key[4:]
        p = f"{path}.{key}"
        lname = name.lower()
        if lname == "invoke" or ":" in name:
            return self._invoke(arg if lname == "invoke" else {"function": name, "arguments": arg}, p)
        if lname == "tojson":
            self.check(arg, None, p)
            return STRING
        if lname in ("secret", "unsecret"):
            return self.check(arg, None, p)
        if lname == "join":
            if not (isinstance(arg, list) and len(arg) == 2):
                self.err("builtin", p, "fn::join takes [delimiter, list]")
                return STRING
            self.check(arg[0], STRING, f"{p}[0]")
            self.check(arg[1], Type("list", elem=STRING), f"{p}[1]")
            return STRING
        if lname == "split":
            if not (isinstance(arg, list) and len(arg) == 2):
                self.err("builtin", p, "fn::split takes [delimiter, string]")
            else:
                self.check(arg[0], STRING, f"{p}[0]")
                self.check(arg[1], STRING, f"{p}[1]")
            return Type("list", elem=STRING)
        if lname == "select":
            if not (isinstance(arg, list) and len(arg) == 2):
                self.err("builtin", p, "fn::select takes [index, list]")
                return None
            self.check(arg[0], INTEGER, f"{p}[0]")
            t = self.check(arg[1], Type("list", elem=ANY), f"{p}[1]")
            return t.elem if t is not None and t.kind == "list" else None
        if lname in ("tobase64", "frombase64", "readfile", "filebase64", "filebase64sha256", "sha1"):
            self.check(arg, STRING, p)
            return STRING
        if lname in ("fileasset", "stringasset", "remoteasset"):
            self.check(arg, STRING, p)
            return ASSET
        if lname in ("filearchive", "remotearchive"):
            self.check(arg, STRING, p)
            return ARCHIVE
        if lname == "assetarchive":
            self.check(arg, Type("map", elem=ANY), p)
            return ARCHIVE
        if lname == "length":
            self.check(arg, None, p)
            return INTEGER
        if lname == "singleornone":
            t = self.check(arg, Type("list", elem=ANY), p)
            return t.elem if t is not None and t.kind == "list" else None
        if lname in ("pulumiresourcename", "pulumiresourcetype"):
            self.check(arg, None, p)
            return STRING
        if lname == "stackreference":
            self.err("deprecated", p, "fn::stackReference is deprecated; use pulumi:pulumi:StackReference", "warning")
            self.check(arg, None, p)
            return None
        self.err("builtin", p, f"unknown built-in function {key!r}")
        self.check(arg, None, p)
        return None

    def _invoke(self, spec, path: str) -> Type | None:
        if not isinstance(spec, dict):
            self.err("builtin", path, "fn::invoke takes {function, arguments, return, options}")
            return None
        for k in spec:
            if k not in ("function", "arguments", "return", "options"):
                self.err("builtin", f"{path}.{k}", f"unknown fn::invoke key {k!r}")
        token = spec.get("function")
        fn = S.function(token) if isinstance(token, str) else None
        if fn is None:
            self.err("unknown-type", f"{path}.function", f"unknown invoke function {token!r} in the pinned SDKs")
            self.check(spec.get("arguments"), None, f"{path}.arguments")
            return None
        self._object(spec.get("arguments") or {}, fn.args, f"{path}.arguments", fn.token)
        opts = spec.get("options") or {}
        for k, v in opts.items() if isinstance(opts, dict) else ():
            if k not in ("provider", "parent", "version", "pluginDownloadURL", "dependsOn"):
                self.err("option", f"{path}.options.{k}", f"unknown invoke option {k!r}")
            elif k in ("provider", "parent"):
                self._resource_target(v, f"{path}.options.{k}", k)
        ret = spec.get("return")
        if ret is None:
            return _record(fn.returns, fn.token)
        if ret not in fn.returns:
            self.err("invoke", f"{path}.return", f"{fn.token} returns no field {ret!r}{_suggest(str(ret), fn.returns)}")
            return None
        return fn.returns[ret].type

    # -- cycles
    def _cycles(self):
        state: dict[str, int] = {}
        stack: list[str] = []
        reported = set()

        def visit(node):
            state[node] = 1
            stack.append(node)
            for nxt in sorted(self.edges.get(node, ())):
                if state.get(nxt) == 1:
                    cycle = stack[stack.index(nxt):] + [nxt]
                    key = frozenset(cycle)
                    if key not in reported:
                        reported.add(key)
                        self.err("cycle", node, "dependency cycle: " + " -> ".join(cycle))
                elif state.get(nxt) is None:
                    visit(nxt)
            stack.pop()
            state[node] = 2

        for node in sorted(self.edges):
            if state.get(node) is None:
                visit(node)


def check_program(program: str | pathlib.Path, stack_files=None, stack_names=()) -> list[Diagnostic]:
    """Check one Pulumi.yaml; stack files default to the Pulumi.*.yaml beside it. The AWS name rules are
    checked for the stacks of those files and for `stack_names`."""
    program = pathlib.Path(program)
    if stack_files is None:
        stack_files = sorted(program.parent.glob("Pulumi.*.yaml"))
    return Checker(program, stack_files, stack_names).run()
