"""`python -m glm_eval task=<name> model=<name> [key=value ...] [--multirun]`

Overrides are checked before Hydra runs anything, so a wrong task, model or option costs one line naming
the valid choices (exit code 2), not a stack trace.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import hydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from omegaconf import DictConfig, OmegaConf

from glm_eval.config import register
from glm_eval.errors import UserError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
GROUPS = ("task", "model", "suite")

OmegaConf.register_new_resolver("basename", lambda path: Path(str(path).rstrip("/")).name, replace=True)
register()


def choices(group: str) -> list[str]:
    folder = CONFIG_DIR / group
    return sorted(str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*.yaml"))


def describe_choices(group: str) -> str:
    """The choices, a subfolder's in one item: `longbench/{2wikimqa|dureader|…}`."""
    folders: dict[str, list[str]] = {}
    for name in choices(group):
        folder, _, leaf = name.rpartition("/")
        folders.setdefault(folder, []).append(leaf)
    top = folders.pop("", [])
    return ", ".join(sorted(top + [f"{folder}/{{{'|'.join(leaves)}}}" for folder, leaves in folders.items()]))


def _one_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def validate(overrides: list[str]) -> None:
    """Raise UserError for an unknown task/model, an unknown key or a badly typed value."""
    from hydra import compose, initialize_config_dir
    try:
        parsed = OverridesParser.create().parse_overrides([o for o in overrides if not o.startswith("hydra")])
    except Exception as e:
        raise UserError(f"cannot parse overrides: {_one_line(e)}") from e
    first_values = []
    for o in parsed:
        key = o.get_key_element()
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        if key in GROUPS:
            for value in values:
                if value not in choices(key):
                    raise UserError(f"unknown {key} '{value}'; valid {key}s: {describe_choices(key)}")
        prefix = {OverrideType.ADD: "+", OverrideType.FORCE_ADD: "++", OverrideType.DEL: "~"}.get(o.type, "")
        first_values.append(f"{prefix}{key}={values[0]}" if o.is_sweep_override() else o.input_line)
    try:
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("config", overrides=first_values)
            OmegaConf.to_container(cfg, resolve=True)  # surfaces missing mandatory values (e.g. model.path)
            missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra"))
    except Exception as e:
        message = _one_line(e)
        unknown = re.search(r"Could not override '([^']+)'", message)
        if unknown:
            message = f"unknown option '{unknown.group(1)}'; options are: {', '.join(_option_names())}"
        elif "Missing mandatory value: model.path" in message:
            message = "model=hf needs model.path=<hub id or local folder>"
        elif e.__cause__ is not None:
            message += f": {_one_line(e.__cause__)}"
        raise UserError(message) from e
    if missing:
        raise UserError(f"missing value for {', '.join(missing)}: set {missing[0]}=…")


def _option_names() -> list[str]:
    from dataclasses import fields, is_dataclass

    from glm_eval.config import EvalConfig, ModelConfig, TaskConfig
    names = []
    for f in fields(EvalConfig):
        kind = {"task": TaskConfig, "model": ModelConfig}.get(f.name) or f.default_factory
        if is_dataclass(kind):
            names += [f"{f.name}.{sub.name}" for sub in fields(kind)]
        else:
            names.append(f.name)
    return names


@hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")
def _run(cfg: DictConfig) -> None:
    from glm_eval.runner import evaluate
    try:
        evaluate(cfg)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)


def main() -> None:
    overrides = [a for a in sys.argv[1:] if not a.startswith("-")]
    try:
        validate(overrides)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
    _run()


if __name__ == "__main__":
    main()
