"""The child process of an atheris campaign: ``python -m fuzz.atheris_child TARGET SAVE ...``.

Instruments the project's modules (and dulwich's and PyYAML's) for coverage, seeds
libFuzzer's corpus directory with the target's seeds, and runs it with the remaining
libFuzzer arguments. An exception outside the target's contract is recorded (once per
key, smallest input kept) and printed as ``FINDING <key> <summary>``; the campaign goes
on instead of stopping at the first one.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["giter_agent", "dulwich", "yaml", "msgpack"]):
    # What the targets import lazily must be imported here to be instrumented.
    import giter_agent.config.agent_toml
    import giter_agent.history.store
    import giter_agent.kinds
    import giter_agent.spec.resources
    import giter_agent.trust.spec_rule
    import giter_agent.trust.status_rule  # noqa: F401
    from fuzz import targets

from fuzz.engine import check_one


def main() -> None:
    name, save = sys.argv[1], Path(sys.argv[2])
    target = targets.TARGETS[name]
    corpus_dir = Path(sys.argv[-1])
    for i, seed in enumerate(target.seeds()):
        (corpus_dir / f"seed-{i}").write_bytes(seed)
    seen: dict[str, int] = {}

    def one_input(data: bytes) -> None:
        found = check_one(target.run, target.allowed, data)
        if found is None:
            return
        key, summary = found
        if key not in seen or len(data) < seen[key]:
            digest = hashlib.sha1(key.encode()).hexdigest()[:10]
            (save / f"{name}-{digest}.bin").write_bytes(data)
            (save / f"{name}-{digest}.txt").write_text(summary + "\n")
            if key not in seen:
                print(f"FINDING {key} {summary}", flush=True)
            seen[key] = len(data)

    atheris.Setup([sys.argv[0], *sys.argv[3:]], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
