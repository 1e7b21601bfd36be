"""What a checkpoint folder may hold, checked before anything is built from it.

Every part is read through `read_part` (JSON -> pydantic model) or `build` (dict -> dataclass), and
weights through `read_weights` + `check_weights`; a malformed part is one `CheckpointError` naming
the file and the field, never a traceback from deep inside a constructor.

Rules:
- ``config.json`` records ``format_version``; a checkpoint of a newer format is refused (this hymate
  cannot know what changed). One without ``format_version`` was written by hymate before formats
  were numbered (0.1.0); its layout is format 1's, so it is read when it is otherwise valid.
- Parts that build objects (model config, training settings, calibration, target, normaliser,
  features) refuse unknown fields; the dataclasses among them are validated by `build` (pydantic
  on the dataclass itself, so its fields are written down once): a field this version would ignore may be one it needs.
  The top level of config.json may carry extra run information (metrics, grid trials, versions).
- ``label_type`` (absent before format 1) must equal the task's; so must ``classes``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from hymate.errors import CheckpointError, HymateError

FORMAT_VERSION = 1

_EXPECTED = {  # pydantic error type -> what the field should be
    "int_parsing": "an integer", "int_type": "an integer", "int_from_float": "an integer",
    "float_parsing": "a number", "float_type": "a number", "finite_number": "a finite number",
    "string_type": "a string", "bool_parsing": "true or false", "bool_type": "true or false",
    "dict_type": "an object", "list_type": "a list", "tuple_type": "a list", "model_type": "an object",
    "dataclass_type": "an object",
}  # fmt: skip


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Platt(_Strict):
    kind: Literal["platt"]
    a: Annotated[float, Field(allow_inf_nan=False, gt=0)]  # fit_platt never inverts a ranking
    b: Annotated[float, Field(allow_inf_nan=False)]


class Temperature(_Strict):
    kind: Literal["temperature"]
    temperature: Annotated[float, Field(allow_inf_nan=False, gt=0)]


class NoCalibration(_Strict):
    kind: Literal["none"]


Calibration = Annotated[Platt | Temperature | NoCalibration, Field(discriminator="kind")]
CALIBRATION_OF = {"binary": ("platt", "none"), "multiclass": ("temperature", "none"), "regression": ("none",)}


class Target(_Strict):
    """Regression targets are standardised with these (neural models)."""

    mean: Annotated[float, Field(allow_inf_nan=False)]
    sd: Annotated[float, Field(allow_inf_nan=False, gt=0)]


class Decision(BaseModel):
    metric: str
    threshold: Annotated[float, Field(allow_inf_nan=False)]


class CheckpointConfig(BaseModel):
    """config.json. `config` (model) and `train` are dataclasses' fields: checked by `build`."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())
    format_version: int | None = None  # None: written before formats were numbered (see the module docstring)
    hymate_version: str | None = None
    kind: Literal["neural", "tabular"]
    model: str
    task: str
    label_type: Literal["binary", "multiclass", "regression"] | None = None
    classes: list[str] | None = None
    positive_label: str | None = None
    architecture: str | None = None  # neural
    config: dict[str, Any] | None = None  # neural: the model's config
    target: Target | None = None
    calibration: Calibration | None = None
    decision: Decision | None = None
    train: dict[str, Any]
    split: str | None = None
    split_sha256: str | None = None


# --- reading --------------------------------------------------------------------------------
def _problem(error: dict, where: str = "") -> str:
    field = ".".join(str(p) for p in (*([where] if where else []), *error["loc"]) if not str(p).startswith(("function-", "tagged-union")))
    kind = error["type"]
    if kind == "missing":
        return f"field {field!r}: missing"
    if kind == "extra_forbidden":
        return f"unknown field {field!r}"
    expected = f"expected {_EXPECTED[kind]}" if kind in _EXPECTED else error["msg"][0].lower() + error["msg"][1:]
    got = repr(error.get("input"))
    return f"field {field!r}: {expected}, got {got if len(got) <= 40 else got[:37] + '...'}" if field else f"{expected}, got {got[:40]}"


def validation_message(file, exc: ValidationError, where: str = "") -> str:
    errors = exc.errors(include_url=False)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{file}: {_problem(errors[0], where)}{more}"


def validate(data: Any, model, file, where: str = ""):
    """`data` as `model` (a pydantic model or any type pydantic validates), or a CheckpointError naming `file`."""
    try:
        return TypeAdapter(model).validate_python(data)
    except ValidationError as exc:
        raise CheckpointError(validation_message(file, exc, where)) from None


def read_json(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (an incomplete checkpoint)")
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None


def read_part(path: Path, model):
    """The JSON file `path` validated as `model`; every failure is one CheckpointError naming the file."""
    return validate(read_json(path), model, path)


def check_format(data: dict, file) -> None:
    """Refuse a format this version cannot read (before any other field is looked at)."""
    version = data.get("format_version")
    if version is None:
        return  # before formats were numbered: format 1's layout
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{file}: field 'format_version': expected an integer >= 1, got {version!r}")
    if version > FORMAT_VERSION:
        written = data.get("hymate_version", "a newer hymate")
        raise CheckpointError(f"incompatible checkpoint: format {version}, this hymate reads {FORMAT_VERSION} "
                              f"({file}, written by hymate {written}): upgrade hymate")  # fmt: skip


def build(cls, data: Any, file, where: str = ""):
    """The dataclass `cls` from `data`, naming unknown and missing fields, wrong types and `file`."""
    label = f"{where}." if where else ""
    if not isinstance(data, dict):
        raise CheckpointError(f"{file}: field {where or cls.__name__!r}: expected an object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    needed = [n for n, f in fields.items() if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [n for n in needed if n not in data]
    if unknown or missing:
        parts = ([f"unknown field{'s' * (len(unknown) > 1)} {', '.join(label + u for u in unknown)}"] if unknown else []) + (
            [f"missing field{'s' * (len(missing) > 1)} {', '.join(label + m for m in missing)}"] if missing else [])  # fmt: skip
        raise CheckpointError(f"{file}: {'; '.join(parts)} (of {cls.__name__})")
    try:
        return validate(data, cls, file, where)
    except HymateError as exc:  # the dataclass's own checks (__post_init__)
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{file}: {exc}") from None


# --- weights --------------------------------------------------------------------------------
def read_weights(path: Path) -> dict:
    """A safetensors file as tensors; a missing, truncated or foreign file is a CheckpointError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (an incomplete checkpoint)")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({str(exc).splitlines()[0][:120]})") from None


def check_weights(state_dict: dict, module, file, show: int = 3) -> None:
    """Before `load_state_dict`: the keys and shapes of `state_dict` must be those of `module`."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    given = {k: tuple(v.shape) for k, v in state_dict.items()}
    problems = []
    for label, names in (("missing", [k for k in expected if k not in given]), ("unexpected", [k for k in given if k not in expected])):
        if names:
            problems.append(f"{len(names)} {label} tensor{'s' * (len(names) > 1)} ({', '.join(names[:show])}{', ...' * (len(names) > show)})")
    wrong = [f"{k} {list(given[k])} (expected {list(s)})" for k, s in expected.items() if k in given and given[k] != s]
    if wrong:
        problems.append(f"{len(wrong)} shape mismatch{'es' * (len(wrong) > 1)}: {', '.join(wrong[:show])}{', ...' * (len(wrong) > show)}")
    if problems:
        raise CheckpointError(f"{file}: the weights do not fit the model its config.json describes: {'; '.join(problems)}")
