"""The operations of the default workload's compiled program (DCE, width 100, float64, 8 seeds,
5 000 steps, λ1/λ2 every 25 steps, records every 5; one CPU device, runs mapped one after
another), counted: each optimised HLO instruction by its opcode and result type. Two versions of
the code that give the same histogram compile the same arithmetic, whatever the load on the
machine when their speeds are compared.

    python -m benchmarks.program_ops [--json PATH]
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import re


def histogram() -> dict[str, int]:
    import jax

    jax.config.update("jax_enable_x64", True)
    from dynloss_jax import SweepConfig, engine
    from dynloss_jax.spec import RunSpec, make_hyper
    from dynloss_jax.strategy import Strategy

    config = SweepConfig(
        loss=("dce",), width=(100,), eta=(1.0,), amplitude=(70.0,), period=(5000,), seeds=8,
        steps=5000, eig_every=25, record_every=5,
    ).validate()  # fmt: skip
    group = config.programs()[0]
    spec = RunSpec.from_config(config, **group)
    hyper = make_hyper(**config.program_runs(group), opt_hp=config.opt_hp, dtype=config.dtype)
    data = config.arrays()
    init, advance, _ = engine.compiled(spec, config.steps, Strategy(batch_size=1, n_devices=1))
    text = advance.lower(init(hyper, data), hyper, data).compile().as_text()
    counts = collections.Counter()
    for line in text.splitlines():
        m = re.match(r"\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(\S+)\s+([\w\-]+)\(", line)
        if m:
            counts[f"{m.group(2)} {re.sub(r'{[^}]*}', '', m.group(1))}"] += 1
    return dict(sorted(counts.items()))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    counts = histogram()
    digest = hashlib.sha256(json.dumps(counts, sort_keys=True).encode()).hexdigest()
    out = {"instructions": sum(counts.values()), "kinds": len(counts), "sha256": digest}
    print(json.dumps(out))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**out, "histogram": counts}, f, indent=1)
            f.write("\n")
    return out


if __name__ == "__main__":
    main()
