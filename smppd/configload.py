"""A small loader from a YAML file into frozen, typed dataclasses.

It owns the walk: each dataclass field's type hint (str, int, float, bool, Path, Literal, enums,
`X | None`, `tuple[X, ...]`, `dict[str, X]`, nested dataclasses) says how to check and convert the
value under its key, and `Annotated` extras add ranges, lengths, patterns, converters and secrets.
Unknown keys are refused, missing keys take the field's default, and every failure names its key
path. It knows nothing of smppd's sections: the schema and the cross-checks live in `smppd.config`.
"""

from __future__ import annotations

import abc
import dataclasses
import difflib
import enum
import functools
import math
import os
import pwd
import re
import stat
import types
import typing
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar

import yaml

from smppd.errors import SmppdError
from smppd.yamlproblem import yaml_problem

T = TypeVar("T")
KeyPath = tuple[str | int, ...]


class ConfigError(SmppdError):
    """The config file cannot be used; the message is one line: file, where, reason.

    `where` is a key path (`carriers[0].window`), a position for a YAML syntax error
    (`line 3, column 2`), or empty when the reason concerns the whole file.
    """

    def __init__(self, file: Path | str, where: str, reason: str) -> None:
        self.file = str(file)
        self.where = where
        self.reason = reason
        super().__init__(f"{file}: {where}: {reason}" if where else f"{file}: {reason}")


class ValidationError(ValueError):
    """A value failed a check at `path` (relative to the object that raised it, if any)."""

    def __init__(self, reason: str, *path: str | int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: KeyPath = path

    def under(self, prefix: KeyPath) -> ValidationError:
        return ValidationError(self.reason, *prefix, *self.path)


def format_key(path: KeyPath) -> str:
    """`("carriers", 0, "window")` -> `carriers[0].window`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", part):
            out += f"[{part!r}]"
        else:
            out += f".{part}" if out else part
    return out


# --- Annotated extras ---------------------------------------------------------------------------


class Check(abc.ABC):
    """A constraint on an already converted value."""

    @abc.abstractmethod
    def accepts(self, value: object) -> bool: ...

    @abc.abstractmethod
    def describe(self, noun: str, base: object) -> str:
        """Extend `noun` ("an integer") into what is expected ("an integer between 1 and 9")."""


class Converter(abc.ABC):
    """Replaces a type's own conversion; `convert` raises ValueError to reject a raw value."""

    @abc.abstractmethod
    def convert(self, raw: object) -> object: ...

    @abc.abstractmethod
    def describe(self) -> str: ...


def _number(x: float) -> str:
    return str(int(x)) if x == int(x) else str(x)


@dataclasses.dataclass(frozen=True, slots=True)
class Range(Check):
    """lo <= value <= hi (lo < value when `above`); either bound may be None."""

    lo: float | None = None
    hi: float | None = None
    above: bool = False

    def accepts(self, value: object) -> bool:
        if not isinstance(value, int | float):
            return False
        if self.lo is not None and (value <= self.lo if self.above else value < self.lo):
            return False
        return self.hi is None or value <= self.hi

    def describe(self, noun: str, base: object) -> str:
        lo = None if self.lo is None else _number(self.lo)
        hi = None if self.hi is None else _number(self.hi)
        if lo is not None and self.above:
            return f"{noun} greater than {lo}" + ("" if hi is None else f" and at most {hi}")
        if lo is not None and hi is not None:
            return f"{noun} between {lo} and {hi}"
        if lo is not None:
            return f"{noun} of at least {lo}"
        return noun if hi is None else f"{noun} of at most {hi}"


@dataclasses.dataclass(frozen=True, slots=True)
class Length(Check):
    """lo <= len(value) <= hi for strings and lists."""

    lo: int = 0
    hi: int | None = None

    def accepts(self, value: object) -> bool:
        if not isinstance(value, str | tuple):
            return False
        return self.lo <= len(value) and (self.hi is None or len(value) <= self.hi)

    def describe(self, noun: str, base: object) -> str:
        unit = "characters" if base is str else "items"
        if self.hi is None:
            return f"{noun} of at least {self.lo} {unit if self.lo != 1 else unit[:-1]}"
        if self.lo == 0:
            return f"{noun} of at most {self.hi} {unit}"
        return f"{noun} of {self.lo} to {self.hi} {unit}"


@dataclasses.dataclass(frozen=True, slots=True)
class Pattern(Check):
    """The whole string matches `regex`; `description` replaces the type's noun in messages."""

    regex: str
    description: str

    def accepts(self, value: object) -> bool:
        return isinstance(value, str) and re.fullmatch(self.regex, value) is not None

    def describe(self, noun: str, base: object) -> str:
        return self.description


@dataclasses.dataclass(frozen=True, slots=True)
class OneOf(Check):
    values: tuple[object, ...]

    def accepts(self, value: object) -> bool:
        return value in self.values

    def describe(self, noun: str, base: object) -> str:
        return "one of " + ", ".join(map(str, self.values))


@dataclasses.dataclass(frozen=True, slots=True)
class Secret:
    """A secret field `x` may be given as `x`, `x_file` (a path) or `x_credential` (the name of a
    systemd credential in $CREDENTIALS_DIRECTORY), exactly one; messages never echo its value."""


def derive(fn: Callable[[Mapping[str, object]], object]) -> dict[str, object]:
    """Field metadata: when the key is absent, compute the value from the fields loaded so far."""
    return {"derive": fn}


# --- YAML ---------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 scalars and no surprises.

    Duplicate keys are refused. Only true/false are booleans, so a word such as `NO` or `on`
    stays a string. Integers are decimal, 0o octal or 0x hex: `02775` is 2775, not YAML 1.1's
    octal 1533, and `1:40` is a string, not sexagesimal 100. A value its tag cannot build
    (`!!int abc`, `2024-02-30`) is an error at its line, not a traceback.
    """

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        tag = node.tag.rsplit(":", 1)[-1]
        if node.tag in _UNUSED:
            raise yaml.constructor.ConstructorError(
                None, None, f"the !!{tag} tag is not supported", node.start_mark
            )
        kind = _NODE_OF.get(node.tag)
        if kind is not None and not isinstance(node, kind):
            raise yaml.constructor.ConstructorError(
                None, None, f"not a valid {tag} value", node.start_mark
            )
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, OverflowError):
            # Not the value itself: it may be a secret (`password: !!int ...`).
            raise yaml.constructor.ConstructorError(
                None, None, f"not a valid {tag} value", node.start_mark
            ) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise yaml.constructor.ConstructorError(
                    None, None, "merge keys (<<) are not supported", key_node.start_mark
                )
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                raise yaml.constructor.ConstructorError(
                    None, None, f"a {type(key).__name__} cannot be a key", key_node.start_mark
                )
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        text = str(self.construct_scalar(node))
        digits = text.lstrip("+-")
        sign = -1 if text.startswith("-") else 1
        base = {"0x": 16, "0o": 8}.get(digits[:2], 10)
        if base != 10:
            digits = digits[2:]
        elif not digits.isdecimal() or not digits.isascii():
            raise ValueError(f"invalid literal {text!r}")
        if len(digits) > _MAX_DIGITS:  # hex too: a huge one breaks float() and repr()
            raise ValueError(f"more than {_MAX_DIGITS} digits")
        return sign * int(digits, base)

    # An explicit !!bool or !!float reads as YAML 1.2 too: `!!bool yes` and `!!float 1:30`
    # (sexagesimal) are errors, as the same words without the tag are strings.
    def construct_yaml_bool(self, node: yaml.ScalarNode) -> bool:
        text = str(self.construct_scalar(node))
        if not _BOOL.match(text):
            raise ValueError(f"{text!r} is not true or false")
        return text.lower() == "true"

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
        text = str(self.construct_scalar(node))
        if not (_FLOAT.match(text) or _INT.match(text)):
            raise ValueError(f"invalid literal {text!r}")
        return float(super().construct_yaml_float(node))


_MAX_DIGITS = 30
_YAML = "tag:yaml.org,2002:"
# Tags no setting takes: refused at their line (their constructors fail in ways that would
# escape as tracebacks, and a timestamp would be built though none is read).
_UNUSED = frozenset(_YAML + tag for tag in ("timestamp", "set", "omap", "pairs", "binary"))
# The node a collection tag needs: `!!map x` is an error at its line.
_NODE_OF: dict[str, type[yaml.Node]] = {
    _YAML + "map": yaml.MappingNode,
    _YAML + "seq": yaml.SequenceNode,
    _YAML + "str": yaml.ScalarNode,
}
# Timestamps are YAML 1.1 only: `2024-02-20` is a string, as it is to YAML 1.2.
_REPLACED = {_YAML + "bool", _YAML + "int", _YAML + "float", _YAML + "timestamp"}
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _REPLACED]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
# The YAML 1.2 core schema's forms (https://yaml.org/spec/1.2.2/#1032-tag-resolution).
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.nan|\.NaN|\.NAN)$"
)
_Loader.add_implicit_resolver(_YAML + "bool", _BOOL, list("tTfF"))
_Loader.add_implicit_resolver(_YAML + "int", _INT, list("-+0123456789"))
_Loader.add_implicit_resolver(_YAML + "float", _FLOAT, list("-+.0123456789"))
_Loader.add_constructor(_YAML + "int", _Loader.construct_yaml_int)
_Loader.add_constructor(_YAML + "bool", _Loader.construct_yaml_bool)
_Loader.add_constructor(_YAML + "float", _Loader.construct_yaml_float)


def read_yaml(path: Path) -> object:
    """Parse `path`; a syntax error names its line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, "", "not valid UTF-8") from None
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (_Loader is a SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = "" if mark is None else f"line {mark.line + 1}, column {mark.column + 1}"
        raise ConfigError(path, where, yaml_problem(text, exc)) from None
    except yaml.reader.ReaderError as exc:  # a character YAML forbids: where it is, in lines
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        character = exc.character if isinstance(exc.character, int) else ord(exc.character)
        reason = f"a character YAML does not allow: U+{character:04X}"
        raise ConfigError(path, f"line {line}, column {column}", reason) from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, "", f"invalid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(path, "", "invalid YAML: nested too deeply") from None
    except Exception as exc:  # a constructor's own failure: not a traceback, nor its text
        raise ConfigError(path, "", f"invalid YAML ({type(exc).__name__})") from None


# --- the walk -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class LoadContext:
    base_dir: Path  # relative paths resolve against the config file's directory
    environ: Mapping[str, str]
    # False: a secret's file or credential is named but not read (its value is "").
    read_secrets: bool = True


def load(
    cls: type[T],
    path: Path,
    *,
    environ: Mapping[str, str],
    finish: Callable[[T], T] | None = None,
    read_secrets: bool = True,
    section: str | None = None,
) -> T:
    """Read `path` into `cls`; `finish` runs cross-checks and may raise ValidationError too.
    With `section`, only that key of the file is read into `cls` (the rest is not checked)."""
    raw = read_yaml(path)
    ctx = LoadContext(
        base_dir=Path(os.path.abspath(path)).parent, environ=environ, read_secrets=read_secrets
    )
    where: KeyPath = ()
    if section is not None and isinstance(raw, Mapping):  # else build() says what is wrong
        raw, where = raw.get(section, {}), (section,)  # given empty, it is refused as a whole
    elif raw is None:  # an empty file
        raw = {}
    try:
        value = build(cls, raw, ctx, where)
        return value if finish is None else finish(value)
    except ValidationError as exc:
        raise ConfigError(path, format_key(exc.path), exc.reason) from None


def build(cls: type[T], raw: object, ctx: LoadContext, path: KeyPath = ()) -> T:
    """Build dataclass `cls` from parsed YAML; errors carry an absolute key path."""
    if not isinstance(raw, Mapping):
        raise ValidationError(f"must be a mapping, got {_show(raw)}", *path)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    hints = _hints(typing.cast(type, cls))
    secrets = {name for name in fields if _extra(hints[name], Secret)}
    accepted = set(fields) | {f"{s}_{suffix}" for s in secrets for suffix in ("file", "credential")}
    for key in raw:
        if not isinstance(key, str):
            raise ValidationError(f"keys must be strings, got {_show(key)}", *path)
        if key not in accepted:
            near = difflib.get_close_matches(key, sorted(accepted), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ValidationError(f"unknown key{hint}", *path, key)
    values: dict[str, object] = {}
    for name, field in fields.items():
        has_default = (
            field.default is not dataclasses.MISSING
            or field.default_factory is not dataclasses.MISSING
        )
        if name in secrets:
            secret = _secret(name, hints[name], raw, ctx, path, required=not has_default)
            if secret is not None:
                values[name] = secret
        elif name in raw:
            values[name] = _convert(hints[name], raw[name], ctx, (*path, name))
        elif "derive" in field.metadata:
            values[name] = field.metadata["derive"](values)
        elif not has_default:
            raise ValidationError("required key is missing", *path, name)
    factory: Callable[..., T] = cls
    try:
        return factory(**values)
    except ValidationError as exc:  # a __post_init__ cross-field check, relative to this object
        raise exc.under(path) from None
    except ValueError as exc:  # a check that did not say which key: name the object at least
        raise ValidationError(f"invalid: {exc}", *path) from None


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _unwrap(tp: Any) -> tuple[Any, tuple[object, ...]]:
    if typing.get_origin(tp) is Annotated:
        base, *extras = typing.get_args(tp)
        inner, more = _unwrap(base)
        return inner, (*extras, *more)
    return tp, ()


def _extra(tp: Any, kind: type[T]) -> T | None:
    base, extras = _unwrap(tp)
    if typing.get_origin(base) in (typing.Union, types.UnionType):
        extras += _unwrap(_optional_arm(base))[1]
    return next((e for e in extras if isinstance(e, kind)), None)


def _optional_arm(tp: Any) -> Any:
    arms = [a for a in typing.get_args(tp) if a is not type(None)]
    if len(arms) != 1 or len(typing.get_args(tp)) != 2:
        raise TypeError(f"only `X | None` unions are supported, not {tp}")
    return arms[0]


def _show(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return f"a list of {len(value)} item{'' if len(value) == 1 else 's'}" if value else "[]"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _noun(tp: Any) -> str:
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if tp is Path:
        return "a path"
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in tp)
    if typing.get_origin(tp) is tuple:
        return "a list"
    return "a mapping"


def _expected(tp: Any, extras: tuple[object, ...]) -> str:
    converter = next((e for e in extras if isinstance(e, Converter)), None)
    phrase = converter.describe() if converter else _noun(tp)
    for check in extras:
        if isinstance(check, Check):
            phrase = check.describe(phrase, tp)
    return phrase


def _mismatch(tp: Any, extras: tuple[object, ...], raw: object, path: KeyPath) -> ValidationError:
    if any(isinstance(e, Secret) for e in extras):
        return ValidationError(f"must be {_expected(tp, extras)}", *path)
    hint = ""
    if tp is str and isinstance(raw, int | float):
        hint = " (quote it to make it a string)"
    return ValidationError(f"must be {_expected(tp, extras)}, got {_show(raw)}{hint}", *path)


def _convert(tp: Any, raw: object, ctx: LoadContext, path: KeyPath) -> object:
    base, extras = _unwrap(tp)
    if typing.get_origin(base) in (typing.Union, types.UnionType):
        if raw is None:
            return None
        base, more = _unwrap(_optional_arm(base))
        extras = (*extras, *more)
    converter = next((e for e in extras if isinstance(e, Converter)), None)
    try:
        value = converter.convert(raw) if converter else _convert_base(base, raw, ctx, path)
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            raise
        raise _mismatch(base, extras, raw, path) from None
    if not all(c.accepts(value) for c in extras if isinstance(c, Check)):
        raise _mismatch(base, extras, raw, path)
    return value


def config_path(raw: str, ctx: LoadContext, where: KeyPath) -> Path:
    """A path from the file: a leading ~ or ~user is that home directory, and a relative path
    is the config file's directory's; nothing else ($VAR, globs) is expanded."""
    if raw.startswith("~"):
        user, _, rest = raw[1:].partition("/")
        if user:
            try:
                home = pwd.getpwnam(user).pw_dir
            except KeyError:
                raise ValidationError(f"no user {user!r} for {raw!r}", *where) from None
        elif not (home := ctx.environ.get("HOME", "")):
            raise ValidationError(f"{raw!r} starts with ~ but $HOME is not set", *where)
        raw = os.path.join(home, rest)
    return Path(os.path.normpath(ctx.base_dir / raw))


def _is_text(value: str) -> bool:
    """False for a string holding a lone surrogate (YAML's "\\ud800"): no file, socket or
    SMSC could take it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _convert_base(tp: Any, raw: object, ctx: LoadContext, path: KeyPath) -> object:
    """Convert `raw` to plain type `tp`; a bare ValueError means "wrong type"."""
    origin = typing.get_origin(tp)
    number = isinstance(raw, int | float) and not isinstance(raw, bool)
    if tp is bool and isinstance(raw, bool):
        return raw
    if tp is int and number and isinstance(raw, int):
        return raw
    if tp is float and number and math.isfinite(typing.cast(float, raw)):
        return float(typing.cast(float, raw))
    if tp is str and isinstance(raw, str) and _is_text(raw):
        return raw
    if tp is Path and isinstance(raw, str) and raw and "\0" not in raw and _is_text(raw):
        return config_path(raw, ctx, path)
    if origin is Literal:
        for choice in typing.get_args(tp):
            if type(choice) is type(raw) and choice == raw:
                return choice
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        for member in tp:
            if type(member.value) is type(raw) and member.value == raw:
                return member
    if origin is tuple and isinstance(raw, list):
        item, *rest = typing.get_args(tp)
        if rest != [Ellipsis]:
            raise TypeError(f"only `tuple[X, ...]` is supported, not {tp}")
        return tuple(_convert(item, x, ctx, (*path, i)) for i, x in enumerate(raw))
    if origin is dict and isinstance(raw, Mapping):
        key_tp, value_tp = typing.get_args(tp)
        if key_tp is not str:
            raise TypeError(f"only `dict[str, X]` is supported, not {tp}")
        out: dict[str, object] = {}
        for key, value in raw.items():
            if not isinstance(key, str):
                raise ValidationError(f"keys must be strings, got {_show(key)}", *path)
            out[key] = _convert(value_tp, value, ctx, (*path, key))
        return out
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return build(tp, raw, ctx, path)
    raise ValueError(tp)


_CREDENTIAL_NAME = re.compile(r"[A-Za-z0-9_@:+=-][A-Za-z0-9_.@:+=-]*")


def _secret(
    name: str,
    tp: Any,
    raw: Mapping[str, object],
    ctx: LoadContext,
    path: KeyPath,
    *,
    required: bool,
) -> str | None:
    keys = (name, f"{name}_file", f"{name}_credential")
    given = [k for k in keys if k in raw]
    if len(given) > 1:
        raise ValidationError(f"give only one of {', '.join(given)}", *path)
    if not given:
        if required:
            raise ValidationError(
                f"required key is missing (or give {keys[1]} or {keys[2]})", *path, name
            )
        return None
    key = given[0]
    value = raw[key]
    where = (*path, key)
    if not isinstance(value, str) or (key != name and not value) or not _is_text(value):
        noun = "a string" if key == name else "a path" if key == keys[1] else "a credential name"
        raise ValidationError(f"must be {noun} (quoted if it looks like a number)", *where)
    if key == keys[1]:
        if "\0" in value:
            raise ValidationError("must be a path, not one holding a NUL character", *where)
        if not ctx.read_secrets:
            return ""
        file = config_path(value, ctx, where)
        _check_private(file, where)
        secret = _read_secret(file, where)
    elif key == keys[2]:
        if not _CREDENTIAL_NAME.fullmatch(value):
            raise ValidationError(f"must be a credential file name, got {value!r}", *where)
        if not ctx.read_secrets:
            return ""
        directory = ctx.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise ValidationError(
                "$CREDENTIALS_DIRECTORY is not set (systemd sets it for LoadCredential=)", *where
            )
        secret = _read_secret(Path(directory) / value, where)
    else:
        secret = value
    base, extras = _unwrap(tp)
    if not all(c.accepts(secret) for c in extras if isinstance(c, Check)):
        raise _mismatch(base, extras, secret, where)
    return secret


def _check_private(file: Path, where: KeyPath) -> None:
    """A password file anyone on the machine may read is refused, as ssh refuses such keys:
    the password would be no secret. (A credential is systemd's to guard.)"""
    try:
        mode = file.stat().st_mode
    except OSError:
        return  # _read_secret names the problem
    if mode & stat.S_IROTH:
        raise ValidationError(
            f"{file} is readable by everyone (mode {stat.S_IMODE(mode):04o}): chmod o-r it",
            *where,
        )


def _read_secret(file: Path, where: KeyPath) -> str:
    try:
        data = _read_small_file(file)
    except OSError as exc:
        raise ValidationError(f"cannot read {file}: {exc.strerror or exc}", *where) from None
    except _SecretFileError as exc:
        raise ValidationError(f"{file} {exc}", *where) from None
    try:
        # A trailing newline is an artefact of `echo secret > file`, never part of a password.
        return data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ValidationError(f"{file} is not valid UTF-8", *where) from None


MAX_SECRET_BYTES: Final = 4096  # a password is at most 8 octets; room for editors' comments


class _SecretFileError(Exception):
    pass


def _read_small_file(file: Path) -> bytes:
    """The file's content, if a regular file of at most MAX_SECRET_BYTES. Opened without
    blocking: a FIFO or a device there (a typo, a secret agent's pipe) would stop the config
    load, and with it a reload's event loop, until someone wrote to it."""
    fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _SecretFileError("is not a regular file")
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, MAX_SECRET_BYTES + 1 - size):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_SECRET_BYTES:
                raise _SecretFileError(f"is over {MAX_SECRET_BYTES} bytes: not a password file")
        return b"".join(chunks)
    finally:
        os.close(fd)
