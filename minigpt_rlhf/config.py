"""Command-line configuration: a dataclass per script, `--field=value` overrides, named presets.

Each script defines `@dataclass class Config` with a trailing comment on every field; that comment is the
field's help text (`python train_sft.py --help`). A preset is just a dict of overrides applied before the
command-line ones: `--preset=gpu --batch_size=64`.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import io
import sys
import tokenize
import types
import typing


def field_docs(cls) -> dict[str, str]:
    """The trailing `# comment` of each field in the class source, used as its help text."""
    docs = {}
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return docs
    tokens = list(tokenize.generate_tokens(io.StringIO(src).readline))
    for tok in tokens:
        if tok.type == tokenize.COMMENT:
            line = tok.line.strip()
            name = line.split(":", 1)[0].strip()
            if name.isidentifier() and ":" in line and not line.startswith("#"):
                docs.setdefault(name, tok.string.lstrip("# ").strip())
    return docs


def _convert(name: str, raw: str, typ, cls_name: str):
    if isinstance(typ, str):  # postponed annotations
        typ = {"int": int, "float": float, "str": str, "bool": bool}.get(typ.split("|")[0].strip(), str)
        if raw == "None":
            return None
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        if raw == "None":
            return None
        typ = next(a for a in typing.get_args(typ) if a is not type(None))
    try:
        if typ is bool:
            low = raw.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if typ is int:
            try:
                return int(raw)
            except ValueError:
                f = float(raw)  # accept 1e4
                if not f.is_integer():
                    raise
                return int(f)
        if typ is float:
            return float(raw)
        return raw
    except ValueError:
        raise SystemExit(f"{cls_name}: --{name}={raw!r} is not a valid {typ.__name__}") from None


def apply_overrides(config, overrides: dict, source: str):
    """Set fields from a dict, with a clear error for a name that is not a field."""
    names = [f.name for f in dataclasses.fields(config)]
    for key, value in overrides.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" Did you mean --{close[0]}?" if close else ""
            raise SystemExit(f"{type(config).__name__}: unknown option --{key} ({source}).{hint} "
                             f"Run with --help for the list.")
        setattr(config, key, value)
    return config


def parse_config(cls, argv: list[str] | None = None, presets: dict[str, dict] | None = None):
    """Build `cls()` from defaults, then `--preset=NAME`, then `--field=value` arguments, in that order."""
    argv = sys.argv[1:] if argv is None else argv
    presets = presets or {}
    hints = typing.get_type_hints(cls)
    if "--help" in argv or "-h" in argv:
        docs = field_docs(cls)
        print(f"options (--field=value); presets: {', '.join(presets) or 'none'} (--preset=NAME)")
        for f in dataclasses.fields(cls):
            print(f"  --{f.name}={f.default!r:<14} {docs.get(f.name, '')}")
        raise SystemExit(0)
    config = cls()
    pairs = []
    for arg in argv:
        if not arg.startswith("--") or "=" not in arg:
            raise SystemExit(f"{cls.__name__}: cannot parse argument {arg!r}; use --field=value")
        key, raw = arg[2:].split("=", 1)
        pairs.append((key.replace("-", "_"), raw))
    for key, raw in pairs:
        if key == "preset":
            if raw not in presets:
                raise SystemExit(f"{cls.__name__}: unknown preset {raw!r}; choose from {sorted(presets)}")
            apply_overrides(config, presets[raw], f"preset {raw}")
    overrides = {}
    for key, raw in pairs:
        if key == "preset":
            continue
        typ = hints.get(key)
        overrides[key] = _convert(key, raw, typ, cls.__name__) if typ is not None else raw
    return apply_overrides(config, overrides, "command line")
