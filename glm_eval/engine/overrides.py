"""Command-line overrides checked before Hydra runs anything or a model loads: an unknown task, model or key, a
value outside its enum, a number out of bounds or a missing value costs one line naming the valid choices (exit
code 2), not a stack trace."""
from __future__ import annotations

import re
from dataclasses import fields, is_dataclass

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from omegaconf import DictConfig, OmegaConf

from glm_eval.core.config import EvalConfig, ModelConfig, TaskConfig, check_bounds, register
from glm_eval.core.errors import UserError, first_line
from glm_eval.core.files import config_dir

GROUPS = {"task": "task", "model": "model", "suite": "suite", "judge": "model"}  # option → its config folder
# what a user writes → what Hydra composes: the judge is a model config placed at `judge` (Hydra's package syntax),
# and judge.audit is the judging's (judge.* being the judge model's own fields)
ALIASES = {"judge": "model@judge", "judge.audit": "judging.audit", "judge.max_new_tokens": "judging.max_new_tokens"}

OmegaConf.register_new_resolver("basename", lambda path: str(path).rstrip("/").rsplit("/", 1)[-1], replace=True)
register()


def choices(group: str) -> list[str]:
    folder = config_dir() / group
    return sorted(str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*.yaml"))


def describe_choices(group: str) -> str:
    """The choices, a subfolder's in one item: `longbench/{2wikimqa|dureader|…}`."""
    folders: dict[str, list[str]] = {}
    for name in choices(group):
        folder, _, leaf = name.rpartition("/")
        folders.setdefault(folder, []).append(leaf)
    top = folders.pop("", [])
    return ", ".join(sorted(top + [f"{folder}/{{{'|'.join(leaves)}}}" for folder, leaves in folders.items()]))


def spelled_for_hydra(overrides: list[str]) -> list[str]:
    """The overrides with ALIASES' keys renamed (a sweep or a + prefix kept)."""
    renamed = []
    for override in overrides:
        prefix = override[:len(override) - len(override.lstrip("+~"))]
        key, eq, value = override[len(prefix):].partition("=")
        renamed.append(f"{prefix}{ALIASES.get(key, key)}{eq}{value}" if eq or prefix == "~" else override)
    return renamed


def validate(overrides: list[str]) -> None:
    """Raise UserError for an unknown task/model, an unknown key, a badly typed value, a value outside its enum or
    its bounds, or a missing mandatory value. A sweep (a,b) is checked value by value for groups, and with its
    first value for everything else."""
    from hydra import compose, initialize_config_dir
    check_launcher([o for o in overrides if o.startswith("hydra/launcher=")])
    try:
        parsed = OverridesParser.create().parse_overrides([o for o in overrides if not o.startswith("hydra")])
    except Exception as e:
        raise UserError(f"cannot parse overrides: {first_line(e, 1000)}") from e
    for o in parsed:
        key = o.get_key_element()
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        key = {"model@judge": "judge"}.get(key, key)
        if key in GROUPS:
            for value in values:
                if value not in choices(GROUPS[key]) and not (key == "judge" and value == "null"):
                    raise UserError(f"unknown {key} '{value}'; valid {key}s: {describe_choices(GROUPS[key])}")
    first_values = spelled_for_hydra([first_value(o) for o in parsed])
    try:
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            cfg = compose("config", overrides=first_values)
            OmegaConf.to_container(cfg, resolve=True)  # surfaces missing mandatory values (e.g. model.path)
            missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra"))
    except Exception as e:
        raise UserError(_explain(e)) from e
    if missing:
        raise UserError(f"missing value for {', '.join(missing)}: set {missing[0]}=…")
    try:
        check_bounds(cfg)
    except ValueError as e:
        raise UserError(str(e)) from None


def first_value(override) -> str:
    """A parsed override with a sweep (a,b) cut to its first value: what one run of the sweep composes."""
    if not override.is_sweep_override():
        return override.input_line
    prefix = {OverrideType.ADD: "+", OverrideType.FORCE_ADD: "++", OverrideType.DEL: "~"}.get(override.type, "")
    return f"{prefix}{override.get_key_element()}={next(iter(override.sweep_string_iterator()))}"


def first_values(overrides: list[str]) -> list[str]:
    """The overrides of a sweep's first run (Hydra's own overrides left out)."""
    parsed = OverridesParser.create().parse_overrides([o for o in overrides if not o.startswith("hydra")])
    return [first_value(o) for o in parsed]


def check_launcher(overrides: list[str]) -> None:
    """A launcher Hydra knows (ours in configs/hydra/launcher, its own, its plugins'); Hydra's submitit launcher is
    an optional extra, and its SLURM flavour needs sbatch: say so before a sweep."""
    import importlib.util
    import shutil
    known = launchers() if overrides else []
    for override in overrides:
        launcher = override.partition("=")[2]
        if launcher not in known:
            raise UserError(f"unknown launcher '{launcher}'; valid: {', '.join(known)}")
        if launcher.startswith("submitit") and importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
            raise UserError(f"{override} needs Hydra's submitit launcher: pip install -e '.[cluster]'")
        if launcher == "submitit_slurm" and shutil.which("sbatch") is None:
            raise UserError(f"{override} submits with sbatch, which this machine does not have: run the sweep from "
                            "a SLURM login node, or try it here with hydra/launcher=submitit_local")


def launchers() -> list[str]:
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins
    Plugins.instance()  # discovers the installed launcher plugins, which register their configs
    registered = [name.removesuffix(".yaml") for name in ConfigStore.instance().list("hydra/launcher")]
    return sorted({*choices("hydra/launcher"), "basic", *registered})


def _explain(error: Exception) -> str:
    import yaml
    if isinstance(error, yaml.MarkedYAMLError) and (error.problem_mark or error.context_mark):
        mark = error.problem_mark or error.context_mark   # a config file that is not YAML: its place, one line
        context = f" ({error.context})" if error.context and error.problem else ""
        problem = " ".join(f"{error.problem or error.context}{context}".split())[:500]   # quotes the file: bounded
        return f"{mark.name}:{mark.line + 1}:{mark.column + 1}: not valid YAML: {problem}"
    if isinstance(error, yaml.reader.ReaderError):   # a byte YAML refuses (NUL, bad UTF-8): the file and offset
        return f"{error.name}: not valid YAML at character {error.position}: {first_line(error, 500)}"
    message = first_line(error, 1000)
    in_file = re.match(r"In '([\w./-]+)': \w+ raised while composing config:\n(.*)", str(error), re.DOTALL)
    if in_file:  # a config file itself is wrong (Hydra's message names the file, the problem is on its next lines)
        return _explain_file(*in_file.groups())
    detail = f"{error} {error.__cause__ or ''}"
    enum = re.search(r"Invalid value '([^']*)', expected one of \[([^\]]*)\]", detail)
    if enum:
        key = re.search(r"full_key: ([\w.]+)", detail) or re.search(r"override '?([\w.]+)", detail)
        return f"{key.group(1) if key else 'option'}={enum.group(1)} is not valid; valid values: {enum.group(2)}"
    unknown = re.search(r"Could not override '([^']+)'", message)
    free_form = re.search(r"full_key: ([\w.]+)\.(\w+)\s+reference_type=Dict", detail)
    if unknown and free_form:  # a dict of free-form keys (model.vllm.engine_kwargs, task.options) takes + to add
        return (f"{free_form.group(1)} takes free-form keys: add each with +{free_form.group(1)}."
                f"{free_form.group(2)}=<value>")
    if unknown and "not in" in detail:
        return f"unknown option '{unknown.group(1)}'; options are: {', '.join(option_names())}"
    if "Missing mandatory value: model.path" in message:
        return "model=hf needs model.path=<hub id or local folder>"
    if error.__cause__ is not None:
        message += f": {first_line(error.__cause__, 1000)}"
    return message


def _explain_file(source: str, problem: str) -> str:
    """One line for a config file Hydra could not compose: the file, the key, and the keys valid there."""
    file = config_dir() / f"{source}.yaml"
    where = str(file) if file.exists() else source
    key = re.search(r"full_key: ([\w.]+)", problem)
    unknown = re.match(r"Key '([^']+)' not in '\w+'", problem)
    if unknown:
        valid = ""
        if key:  # the schema of the block holding it (a group's schema: its fields are MISSING in EvalConfig's)
            group, *inner = key.group(1).split(".")[:-1]
            schema = {"task": TaskConfig, "model": ModelConfig, "judge": ModelConfig}.get(group)
            parent = OmegaConf.select(OmegaConf.structured(schema or EvalConfig),
                                      ".".join(inner if schema else [group, *inner]))
            if isinstance(parent, DictConfig):
                valid = f"; the keys there are: {', '.join(parent.keys())}"
        return f"{where}: unknown key '{unknown.group(1)}'{f' ({key.group(1)})' if key else ''}{valid}"
    return f"{where}: {first_line(problem, 500)}{f' ({key.group(1)})' if key else ''}"


def option_names() -> list[str]:
    names = []
    for f in fields(EvalConfig):
        kind = {"task": TaskConfig, "model": ModelConfig}.get(f.name) or f.default_factory
        if is_dataclass(kind):
            names += [f"{f.name}.{sub.name}" for sub in fields(kind)]
        else:
            names.append(f.name)
    return names


def config_file(group: str, name: str):
    """configs/<group>/<name>.yaml as written (without its defaults list)."""
    raw = OmegaConf.load(config_dir() / group / f"{name}.yaml")
    raw.pop("defaults", None)
    return raw


def model_config(name: str):
    """The model config `model=<name>` selects (configs/model/<name>.yaml over the typed schema), without Hydra:
    read while a run is under way (model.tokenizer names one)."""
    return OmegaConf.merge(OmegaConf.structured(ModelConfig), config_file("model", name))


def compose_config(overrides: list[str]):
    """The config `python -m glm_eval <overrides>` would run, after the same checks (for Python callers)."""
    from hydra import compose, initialize_config_dir
    validate(overrides)
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("config", overrides=spelled_for_hydra(overrides))
