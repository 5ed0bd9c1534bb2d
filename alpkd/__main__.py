"""Command line: the same steps the notebooks run, launchable with `torchrun --nproc_per_node N -m alpkd ...`.

  python -m alpkd teacher  --task rte                               fine-tune, evaluate, write the cache
  python -m alpkd distill  --task rte --depth 2 --method alp        every seed of one cell (or --seed)
  python -m alpkd cache    --task rte                               rebuild the teacher cache
  python -m alpkd evaluate --task rte --model models/rte/teacher    GLUE metrics of a saved model
  python -m alpkd check                                             validate params.yaml and exit
"""
from __future__ import annotations

import argparse
import json
import sys

from . import config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alpkd", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--out", default=".", help="output root (default: the working directory)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("teacher", "cache", "evaluate"):
        p = sub.add_parser(name)
        p.add_argument("--task", required=True)
        if name == "evaluate":
            p.add_argument("--model", required=True, help="a saved model folder")
    p = sub.add_parser("distill")
    p.add_argument("--task", required=True)
    p.add_argument("--depth", type=int, required=True)
    p.add_argument("--method", required=True, choices=config.METHODS)
    p.add_argument("--seed", type=int, help="default: every seed in distill.seeds")
    sub.add_parser("check")
    args = parser.parse_args(argv)

    try:
        params = config.load(args.params)
        if getattr(args, "task", None) and args.task not in params.data.tasks and args.command != "evaluate":
            raise config.ConfigError(f"--task {args.task!r} is not in data.tasks {params.data.tasks}")
        if args.command == "distill" and args.depth not in params.student.depths:
            raise config.ConfigError(f"--depth {args.depth} is not in student.depths {params.student.depths}")
    except config.ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.command == "check":
        print(f"{args.params}: valid ({params.profile} profile)")
        return 0

    from . import distill  # heavy imports only once the parameters are known to be good

    if args.command == "teacher":
        result = distill.train_teacher(params, args.task, args.out)
    elif args.command == "cache":
        result = {"cache": str(distill.write_cache(params, args.task, args.out))}
    elif args.command == "evaluate":
        result = distill.evaluate_saved(params, args.task, args.model)
    else:
        seeds = [args.seed] if args.seed is not None else None
        result = distill.distill_cell(params, args.task, args.depth, args.method, args.out, seeds)
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
