"""Experiment specs: the envelope models and two-step validation.

A spec is YAML. It is validated in two steps:

1. the **envelope** (:class:`ExperimentSpec`: the keys every spec shares, and each
   component's ``plugin`` name and raw ``params``), then
2. each component's ``params`` against the ``Params`` model of the plugin it names.

So a new plugin needs no change to the core. Every problem becomes a
:class:`~wavelens.SpecIssue` naming its dotted path and line, collected into
one :class:`~wavelens.SpecError`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from ._components import Probe
from ._contributions import Kind
from ._device import DEVICE_PATTERN
from ._errors import PluginError, SpecError, SpecIssue, StageError
from ._registry import LoadedContribution, PluginRegistry
from ._specfile import (
    SpecText,
    apply_overrides,
    apply_section,
    parse_spec_text,
    read_spec_file,
    renamed_v1_path,
)

__all__ = [
    "SPEC_VERSION",
    "SpecPath",
    "Component",
    "ModelComponent",
    "TrainSpec",
    "EvaluationSpec",
    "ReportSpec",
    "ExperimentSpec",
    "ResolvedComponent",
    "ResolvedSpec",
    "load_spec",
    "load_spec_text",
]

SPEC_VERSION = 2
# spec_version 1 named the dataset `data` and the probes `probe`; such a spec is read
# with those keys renamed (_specfile.upgrade_v1).


def _resolve_against_spec(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("spec_dir")
    try:
        value = value.expanduser()
    except RuntimeError as exc:  # ~user for an unknown user
        raise ValueError(str(exc)) from None
    if base is not None and not value.is_absolute():
        value = Path(base) / value
    return value.resolve() if value.is_absolute() else value


SpecPath = Annotated[Path, AfterValidator(_resolve_against_spec)]
"""A path parameter resolved relative to the spec file's folder. Use it in a
plugin's ``Params`` for files and folders the spec names."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Component(_Strict):
    """``{plugin: NAME, params: {...}}``: one plugin and its parameters."""

    plugin: str = Field(description="the name of a loaded plugin of the right kind")
    params: dict[str, Any] = Field(default_factory=dict, description="the plugin's parameters")


class ModelComponent(Component):
    weights: SpecPath | None = Field(
        default=None,
        description="load trained weights from this file instead of (or before) training",
    )


class TrainSpec(_Strict):
    """How the model stage trains. Model-specific settings live in model.params."""

    steps: PositiveInt | None = Field(None, description="optimisation steps (as the model counts them)")
    epochs: PositiveInt | None = Field(
        None, description="passes over the training data, for models that count epochs (give steps or epochs)"
    )
    batch_size: PositiveInt = 64
    checkpoint_every: PositiveInt = Field(1000, description="steps between checkpoints")
    keep_checkpoints: PositiveInt = Field(3, description="how many checkpoints to keep")
    log_every: PositiveInt = Field(50, description="steps between logged losses")
    on_nonfinite: Literal["stop", "warn"] = Field(
        "stop", description="a logged value (a loss) that is NaN or infinite: stop the run, naming "
        "the step (the checkpoints written before stay), or warn and go on")

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> TrainSpec:
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of steps or epochs")
        return self

    def required_steps(self, model: str) -> int:
        """``steps``, for models that count steps only (an error names the model when
        the spec gives epochs)."""
        if self.steps is None:
            raise StageError(f"{model} counts optimisation steps, not epochs: give train.steps")
        return self.steps


class EvaluationSpec(_Strict):
    """Which split the metrics stage scores, in batches of what size, and whether
    item by item (a per-item table, summaries grouped by item fields)."""

    split: str = "test"
    batch_size: PositiveInt = 16
    per_item: bool = Field(
        False, description="score every item separately: scores.csv with one row per item, and a "
        "per-item error entry instead of a failed stage"
    )
    by: list[str] = Field(
        default_factory=list,
        description="item fields to group the summary by (e.g. [noise, snr_db]); "
        "implies per_item",
    )
    workers: PositiveInt = Field(1, description="processes scoring items (per_item only)")

    @property
    def scores_per_item(self) -> bool:
        """Whether items are scored one by one: per_item, or implied by by."""
        return self.per_item or bool(self.by)


VariantName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=40)]


class ReportSpec(_Strict):
    formats: list[Literal["md", "html"]] = Field(default_factory=lambda: ["md", "html"])


class LauncherSpec(_Strict):
    """How ``wavelens run --launcher submitit`` submits the variants (or sweep cells):
    one job each, as one Slurm job array, through submitit (docs/cluster.md). Only
    the launcher reads it: a run's results and digest do not depend on it."""

    executor: Literal["auto", "slurm", "local"] = Field(
        "auto", description="slurm, submitit's local executor, or auto: Slurm where sbatch is found")
    partition: str | None = Field(None, description="the Slurm partition")
    gpus_per_job: int = Field(0, ge=0, description="GPUs each job asks for")
    processes: PositiveInt = Field(
        1, description="processes per job: more than 1 runs the job under torchrun, one per GPU")
    cpus_per_task: PositiveInt | None = Field(None, description="CPU cores per job")
    mem_gb: float | None = Field(None, gt=0, description="memory per job, GB")
    timeout_min: PositiveInt = Field(24 * 60, description="wall-clock limit per job, minutes")
    signal_delay_s: PositiveInt = Field(
        120, description="seconds before the limit at which a job is told to checkpoint and is requeued")
    requeues: int = Field(3, ge=0, description="how often a job that runs out of time is requeued")
    array_parallelism: PositiveInt | None = Field(None, description="jobs of the array running at once")
    folder: str | None = Field(None, description="submitit's logs (default: runs/NAME/jobs-HASH/submitit)")
    slurm: dict[str, Any] = Field(
        default_factory=dict, description="more sbatch options, e.g. {account: ..., qos: ...}")
    setup: list[str] = Field(default_factory=list, description="shell lines run first in each job")


class ExperimentSpec(_Strict):
    """The envelope of a spec (documented key by key in docs/specs.md)."""

    spec_version: Literal[2]
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    description: str = ""
    seed: int = 0
    device: str = Field("auto", pattern=DEVICE_PATTERN)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    plugins: list[SpecPath] = Field(default_factory=list)
    dataset: Component | None = None
    model: ModelComponent | None = None
    train: TrainSpec | None = None
    probes: list[Component] = Field(default_factory=list)
    statistics: list[Component] = Field(default_factory=list)
    metrics: list[Component] = Field(default_factory=list)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    report: ReportSpec = Field(default_factory=ReportSpec)
    profiles: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="named sets of KEY.PATH: value changes, applied with --profile NAME",
    )
    profile: str | None = Field(None, description="the profile applied (set by --profile)")
    variants: dict[VariantName, dict[str, Any]] = Field(
        default_factory=dict,
        description="named sets of KEY.PATH: value changes; `wavelens run` runs each as its own run "
        "and compares them in one table",
    )
    variant: str | None = Field(None, description="the variant this run is (set by wavelens run)")
    launcher: LauncherSpec | None = Field(
        None, description="how --launcher submitit submits the variants as jobs (docs/cluster.md)")

    @model_validator(mode="after")
    def _stages_have_inputs(self) -> ExperimentSpec:
        needs = [
            ("train", self.train is not None, ("dataset", "model")),
            ("probes", bool(self.probes), ("dataset", "model")),
            ("metrics", bool(self.metrics), ("dataset", "model")),
        ]
        # Statistics without probes are valid for `wavelens stats fit TABLE --spec`;
        # `wavelens run` refuses them (wavelens.host.plan_stages).
        for key, present, required in needs:
            for other in required:
                if present and not getattr(self, other):
                    raise ValueError(f"'{key}' needs '{other}' in the same spec")
        return self


# Which kind of plugin each component slot holds: a slot holding one component is
# named by its kind, a slot holding a list by the kind's plural. Stages are named by
# the slot (dataset, model, probes.0, statistics.1, metrics).
SLOTS: dict[str, Kind] = {
    "dataset": "dataset",
    "model": "model",
    "probes": "probe",
    "statistics": "statistic",
    "metrics": "metric",
}


@dataclass(frozen=True)
class ResolvedComponent:
    """A component whose plugin is known and whose params are validated."""

    path: str  # "model", "probes.0"
    plugin: LoadedContribution
    params: BaseModel
    extra: dict[str, Any] = field(default_factory=dict)  # envelope keys besides plugin/params

    def build(self) -> Any:
        return self.plugin.contribution.build(self.params)

    def to_dict(self) -> dict[str, Any]:
        return {
            "plugin": self.plugin.name,
            "params": self.params.model_dump(mode="json"),
            **{k: str(v) if isinstance(v, Path) else v for k, v in self.extra.items()},
        }


@dataclass
class ResolvedSpec:
    """A validated spec: the envelope, every component resolved, and the plugins."""

    spec: ExperimentSpec
    components: dict[str, ResolvedComponent]
    registry: PluginRegistry
    source: str
    spec_dir: Path

    def component(self, path: str) -> ResolvedComponent | None:
        return self.components.get(path)

    def components_of(self, slot: str) -> list[ResolvedComponent]:
        """The components of a list slot (``probes``) or the single one (``model``)."""
        return [c for p, c in self.components.items() if p.split(".")[0] == slot]

    def to_dict(self) -> dict[str, Any]:
        """The fully resolved spec: defaults filled in, paths absolute."""
        data = self.spec.model_dump(mode="json")
        for slot in SLOTS:
            resolved = self.components_of(slot)
            if slot in ("dataset", "model"):
                data[slot] = resolved[0].to_dict() if resolved else None
            else:
                data[slot] = [c.to_dict() for c in resolved]
        return data

    def digest(self) -> str:
        """A hash of the resolved spec; equal specs give equal digests."""
        data = self.to_dict()
        data.pop("launcher", None)  # where a run was submitted from does not change it
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def network_issues(resolved: ResolvedSpec, line_of: Callable[[tuple[str, ...]], int | None]
                   ) -> tuple[list[SpecIssue], str | None]:
    """What the components that can check themselves against the model's network
    (``check_network``) find, as spec issues at their params' lines; and why the
    check could not run, when the network could not be built (None when it ran or
    there is nothing to check)."""
    model = resolved.component("model")
    checking = []
    for path, component in resolved.components.items():
        if path != "model" and component.plugin.kind == "probe":
            built = component.build()
            if type(built).check_network is not Probe.check_network:
                checking.append((path, built))
    if model is None or not checking:
        return [], None
    try:
        network = model.build().network()
    except Exception as exc:  # noqa: BLE001 - the check is extra: say why it did not run
        return [], f"the model's network could not be built to check the probes' layers: " \
                   f"{type(exc).__name__}: {exc}"
    issues = []
    for path, probe in checking:
        for param, message in probe.check_network(network):
            where = (*path.split("."), "params", *param.split("."))
            issues.append(SpecIssue(".".join(where), message, line_of(where)))
    return issues, None


def _format_loc(loc: Iterable[Any]) -> tuple[str, ...]:
    return tuple(str(part) for part in loc)


def _issue_message(error: dict[str, Any], model: type[BaseModel] | None) -> str:
    kind, message = error["type"], error["msg"]
    if kind == "extra_forbidden":
        message = "unknown field"
        if model is not None:
            message += f"; expected one of: {', '.join(model.model_fields)}"
        return message
    if kind == "missing":
        return "required field missing"
    if kind == "value_error":  # raised by our validators, whose messages stand alone
        return str(error.get("ctx", {}).get("error", message))
    if "input" in error and not isinstance(error["input"], (dict, list)):
        return f"{message} (got {error['input']!r})"
    return message


def _issues_from(
    exc: ValidationError,
    prefix: tuple[str, ...],
    text: SpecText,
    model_at: Any = None,
) -> list[SpecIssue]:
    issues = []
    for error in exc.errors():
        loc = (*prefix, *_format_loc(error["loc"]))
        message = _issue_message(error, model_at(loc) if model_at else None)
        issues.append(SpecIssue(".".join(loc), message, text.line_of(loc)))
    return issues


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models inside an annotation (``list[Component] | None`` → Component)."""
    try:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return [annotation]
    except TypeError:  # parametrised generics are not classes
        pass
    return [m for arg in getattr(annotation, "__args__", ()) for m in _models_in(arg)]


def _envelope_model_at(loc: tuple[str, ...]) -> type[BaseModel] | None:
    """The envelope model owning the field at ``loc`` (for 'expected one of')."""
    model: type[BaseModel] = ExperimentSpec
    for part in loc[:-1]:
        if part.isdigit():
            continue
        info = model.model_fields.get(part)
        nested = _models_in(info.annotation) if info is not None else []
        if not nested:
            return None
        model = nested[0]
    return model


def validate_envelope(text: SpecText, spec_dir: Path) -> ExperimentSpec:
    """Step 1: validate the keys every spec shares."""
    data = text.data
    version = data.get("spec_version")
    if version is not None and version != SPEC_VERSION:
        raise SpecError(
            text.source,
            [
                SpecIssue(
                    "spec_version",
                    f"this wavelens reads spec_version {SPEC_VERSION} (and 1, the version before), "
                    f"not {version!r}",
                    text.line_of(("spec_version",)),
                )
            ],
        )
    try:
        return ExperimentSpec.model_validate(data, context={"spec_dir": spec_dir})
    except ValidationError as exc:
        raise SpecError(text.source, _issues_from(exc, (), text, _envelope_model_at)) from None
    except RecursionError:
        raise SpecError(text.source, [SpecIssue("", "the spec nests too deeply")]) from None


def _iter_components(spec: ExperimentSpec) -> Iterator[tuple[str, Kind, Component]]:
    for slot, kind in SLOTS.items():
        value = getattr(spec, slot)
        if value is None:
            continue
        if isinstance(value, list):
            for index, item in enumerate(value):
                yield f"{slot}.{index}", kind, item
        else:
            yield slot, kind, value


def resolve_components(
    spec: ExperimentSpec, text: SpecText, registry: PluginRegistry, spec_dir: Path
) -> dict[str, ResolvedComponent]:
    """Step 2: find each component's plugin and validate its params."""
    issues: list[SpecIssue] = []
    resolved: dict[str, ResolvedComponent] = {}
    for path, kind, component in _iter_components(spec):
        prefix = tuple(path.split("."))
        try:
            plugin = registry.get(kind, component.plugin)
        except PluginError:
            issues.append(
                SpecIssue(
                    f"{path}.plugin",
                    registry.unknown_message(kind, component.plugin),
                    text.line_of((*prefix, "plugin")),
                )
            )
            continue
        try:
            params = plugin.params.model_validate(
                component.params, context={"spec_dir": spec_dir}
            )
        except ValidationError as exc:
            issues += _issues_from(
                exc, (*prefix, "params"), text, lambda _loc, model=plugin.params: model
            )
            continue
        except RecursionError:
            issues.append(SpecIssue(f"{path}.params", "the params nest too deeply"))
            continue
        extra = component.model_dump(exclude={"plugin", "params"})
        resolved[path] = ResolvedComponent(path, plugin, params, extra)
    if issues:
        raise SpecError(text.source, issues)
    return resolved


def _resolve(
    text: SpecText,
    spec_dir: Path,
    overrides: list[str],
    disabled: Iterable[str] | None,
    registry_file: Path | None,
    profile: str | None = None,
    variant: str | None = None,
) -> ResolvedSpec:
    # A profile first, then --set, then a variant: a variant changes what it names
    # in whichever profile was chosen.
    if profile is not None:
        text = text.derive(apply_section(text.data, "profiles", profile, text.source))
    elif isinstance(text.data, dict) and text.data.get("profiles"):
        text = text.derive({k: v for k, v in text.data.items() if k != "profiles"})
    if overrides:
        if text.upgraded_from == 1:  # --set data.params.x=... means what the file says
            overrides = [renamed_v1_path(key) + sep + value
                         for key, sep, value in (o.partition("=") for o in overrides)]
        text = text.derive(apply_overrides(text.data, overrides))
    if variant is not None:
        text = text.derive(apply_section(text.data, "variants", variant, text.source))
    spec = validate_envelope(text, spec_dir)
    missing = [
        SpecIssue(f"plugins.{i}", f"plugin file {p} does not exist", text.line_of(("plugins", str(i))))
        for i, p in enumerate(spec.plugins)
        if not p.is_file()
    ]
    weights = spec.model.weights if spec.model is not None else None
    if weights is not None and not weights.is_file():
        what = "is not a file" if weights.exists() else "does not exist"
        missing.append(SpecIssue("model.weights", f"weights file {weights} {what}",
                                 text.line_of(("model", "weights"))))
    if missing:
        raise SpecError(text.source, missing)
    registry = PluginRegistry.discover(
        files=spec.plugins, disabled=disabled, registry_file=registry_file
    )
    components = resolve_components(spec, text, registry, spec_dir)
    if weights is not None:
        problem = _weights_problem(components["model"], weights)
        if problem:
            line = text.line_of(("model", "weights"))
            raise SpecError(text.source, [SpecIssue("model.weights", problem, line)])
    return ResolvedSpec(spec, components, registry, text.source, spec_dir)


def _weights_problem(model: ResolvedComponent, weights: Path) -> str | None:
    """Why ``weights`` cannot be loaded into the model's network, or None.

    The file must load with ``torch.load(weights_only=True)`` (plain tensors and
    containers: a file that would run code is refused), and the model's own
    ``load_weights`` must accept it into a network built on the ``meta`` device,
    which has the parameters' names and shapes but no storage: the check costs
    reading the file and nothing more."""
    import warnings

    import torch

    def first_line(exc: Exception) -> str:
        text = " ".join(str(exc).split())
        return text[:600] or type(exc).__name__

    try:
        torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to load is the problem reported
        return (f"{weights} is not a weights file that loads safely (torch.load with weights_only=True): "
                f"{first_line(exc).split('. ')[0]}")
    built = model.build()
    try:
        with torch.device("meta"):
            network = built.network()
    except Exception:  # noqa: BLE001 - a model that cannot be built on meta is checked when it runs
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "copying ... to a meta parameter is a no-op": intended
            built.load_weights(network, weights)
    except Exception as exc:  # noqa: BLE001 - any failure to load is the problem reported
        return f"{weights} does not fit a {model.plugin.name} network with these params: {first_line(exc)}"
    return None


def load_spec(
    path: str | Path,
    overrides: list[str] | None = None,
    disabled: Iterable[str] | None = None,
    registry_file: Path | None = None,
    profile: str | None = None,
    variant: str | None = None,
) -> ResolvedSpec:
    """Read, override, validate and resolve the spec at ``path``: the ``profile``'s
    changes, then ``overrides`` (``KEY.PATH=VALUE``), then the ``variant``'s.

    Raises :class:`SpecError` for every problem in the spec itself, and
    :class:`PluginError` when a plugin cannot be loaded.
    """
    path = Path(path)
    text = read_spec_file(path)
    return _resolve(text, path.resolve().parent, overrides or [], disabled, registry_file, profile, variant)


def load_spec_text(
    text: str,
    spec_dir: Path | None = None,
    overrides: list[str] | None = None,
    disabled: Iterable[str] | None = None,
    registry_file: Path | None = None,
    source: str = "<string>",
) -> ResolvedSpec:
    """Like :func:`load_spec`, for YAML text (relative paths resolve in ``spec_dir``)."""
    parsed = parse_spec_text(text, source)
    return _resolve(parsed, (spec_dir or Path.cwd()).resolve(), overrides or [], disabled, registry_file)
