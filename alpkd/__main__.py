"""Command line: the same steps the notebooks run, launchable with `torchrun --nproc_per_node N -m alpkd ...`.

  python -m alpkd data     --task rte                               write data/rte/<split>.parquet (the data stage)
  python -m alpkd teacher  --task rte                               every teacher seed (or --seed): fine-tune, evaluate, cache
  python -m alpkd distill  --task rte --depth 2 --method alp        every seed (or --seed) of one method
  python -m alpkd assist   --task rte                               TAKD, DGKD, CES-KD at every depth with a deeper one
  python -m alpkd cache    --task rte                               rebuild the teacher caches (or --seed)
  python -m alpkd verify-cache --task rte                           re-hash every byte of the teacher caches
  python -m alpkd evaluate --task rte --model scratch/models/rte/teacher   GLUE metrics of a saved model
  python -m alpkd check                                             validate params.yaml and exit
  python -m alpkd compare tries/quick                               runs side by side (scripts/try.sh)
  python -m alpkd significance                                      report/significance.csv again, from metrics/ and predictions/
  python -m alpkd power                                             the run's variance components and the power table
  python -m alpkd numerics --fingerprint                            this machine's arithmetic, per operation (JSON)
  python -m alpkd numerics --compare numerics/fingerprint.json      bit for bit like the committed run, or not
  python -m alpkd --version                                         alpkd <version>

Installed (`pip install -e .`), `alpkd ...` is the same command as `python -m alpkd ...`.

Outputs go under --out (default `scratch`, git-ignored); only an explicit `--out .` writes the pipeline's own
files (models/, metrics/, ...). stdout is the step's JSON record alone (progress and logs go to stderr); an
expected error (parameters, data, cache, a missing or unusable model, a non-finite loss, an unwritable output)
prints one line `error: ...` and exits 2 (parameters) or 1 (the rest). An interrupt (Ctrl-C, Ctrl-\\ (SIGQUIT),
SIGTERM / SIGHUP as `kill` and DVC send, SIGPIPE when the output's reader went away (`| head`), or SIGXCPU at a
CPU-time limit) prints one line too and exits 128 + the signal's number (130 for Ctrl-C, 141 for SIGPIPE);
re-running the same command resumes from the last checkpoint.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

from . import __version__, config, preflight
from .model_files import model_folder_problem
from .paths import Layout, WriteError, disk_full


DEFAULT_OUT = "scratch"


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except (BrokenPipeError, Interrupted) as err:  # what `check`, `power`, ... print, read by `| head`
        if not _broken_pipe(err):
            return _interrupted_early(err)
        _error("output closed by its reader (SIGPIPE, broken pipe: e.g. `| head`); the rest of it was not printed")
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt as err:  # before the step began (while torch loads): nothing written yet
        return _interrupted_early(err)


def _interrupted_early(err: KeyboardInterrupt) -> int:
    signum = getattr(err, "signum", signal.SIGINT)
    _error(f"interrupted by {signal.Signals(signum).name} before the step began; nothing was written")
    return 128 + signum


@contextlib.contextmanager
def _stdout_writes():
    """SIGPIPE held back while a command prints its result: a reader that went away is then the write's
    `BrokenPipeError` alone (the signal, then ignored, is dropped), never a second interrupt raised while the first
    is handled. During a step SIGPIPE is not held back: a closed stderr ends the step as an interrupt."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPIPE})
    try:
        yield
    except BrokenPipeError:
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        raise
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _broken_pipe(err: BaseException) -> bool:
    """Whether `err` says a reader of this process's output went away (a write's EPIPE, or the SIGPIPE that came
    with it); if so, stdout is pointed at /dev/null, so that nothing more fails at exit ("Exception ignored")."""
    if not (isinstance(err, BrokenPipeError) or getattr(err, "signum", None) == signal.SIGPIPE):
        return False
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # the signal that came with the write is no second interrupt
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return True


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog=_prog(), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"alpkd {__version__}")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help=f"output root (default: {DEFAULT_OUT}, git-ignored; "
                             "`--out .` writes the pipeline's outputs)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("data", "teacher", "cache", "evaluate", "verify-cache"):
        p = sub.add_parser(name)
        p.add_argument("--task", required=True)
        if name == "evaluate":
            p.add_argument("--model", required=True, help="a saved model folder")
        if name in ("teacher", "cache", "verify-cache"):
            p.add_argument("--seed", type=int, help="one teacher seed (default: every seed in teacher.seeds)")
    p = sub.add_parser("distill")
    p.add_argument("--task", required=True)
    p.add_argument("--depth", type=int, required=True)
    p.add_argument("--method", help="default: every method in distill.methods")
    p.add_argument("--seed", type=int, help="default: every seed in distill.seeds")
    p = sub.add_parser("assist")
    p.add_argument("--task", required=True)
    p.add_argument("--method", help="one that learns from teacher assistants (default: every one in distill.methods)")
    p.add_argument("--seed", type=int, help="default: every seed in distill.seeds")
    p = sub.add_parser("check", help="validate the params file (and --set changes to it, as `dvc exp run -S` makes "
                                     "them) and ask the data source whether it holds each task; loads no model")
    p.add_argument("-S", "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="a change to check, as `dvc exp run -S` would make it (repeatable)")
    p = sub.add_parser("compare", help="runs side by side: the parameters that differ and the headline metrics")
    p.add_argument("runs", nargs="*", metavar="RUN",
                   help="run folders (each with params.yaml and report/summary.json), or one DVC project: its "
                        "committed run and its experiments (default: the project here)")
    sub.add_parser("significance", help="print report/significance.csv recomputed from metrics/ and predictions/ "
                                        "under --out (default here: .)")
    sub.add_parser("power", help="print the variance components of the run under --out (default here: .) and the "
                                 "95%% half-widths they predict for other numbers of teachers (docs/statistics.md)")
    p = sub.add_parser("numerics", help="this machine's fingerprint of the operations a run uses (seconds)")
    p.add_argument("--fingerprint", action="store_true", help="print it as JSON on stdout")
    p.add_argument("--out", dest="fingerprint_out", metavar="FILE", help="write it to FILE")
    p.add_argument("--compare", metavar="FILE", help="compare it with FILE's and print one line")
    args = parser.parse_args(argv)
    if args.command == "numerics":  # the default runtime's numerics, whatever params.yaml says: reads no params
        with _stdout_writes():
            return _numerics(args, parser)
    if args.command == "compare":  # reads finished runs' files: no params of its own
        from . import compare

        try:
            with _stdout_writes():
                print(compare.render(compare.gather(args.runs)))
        except compare.CompareError as err:
            _error(err)
            return 1
        return 0
    if args.command in ("significance", "power") and args.out == DEFAULT_OUT:
        args.out = "."  # they read a finished run: the pipeline's own outputs unless told otherwise

    try:
        params = preflight.load(args.params)  # the file, then what its teacher's folder says of it
        if getattr(args, "sets", None):
            params = _with_sets(args.params, args.sets)
        if getattr(args, "task", None) and args.task not in params.data.tasks and args.command != "evaluate":
            raise config.ConfigError(f"--task {args.task!r} is not in data.tasks {params.data.tasks}")
        if args.command == "distill" and args.depth not in params.student.depths:
            raise config.ConfigError(f"--depth {args.depth} is not in student.depths {params.student.depths}")
        if getattr(args, "seed", None) is not None:
            _check_seed(args.seed)
        if args.command in ("distill", "assist") and args.seed is not None and args.seed not in params.distill.seeds:
            raise config.ConfigError(f"--seed {args.seed} is not in distill.seeds {params.distill.seeds}")
        if args.command in ("teacher", "cache", "verify-cache") and args.seed is not None \
                and args.seed not in params.teacher.seeds:
            raise config.ConfigError(f"--seed {args.seed} is not in teacher.seeds {params.teacher.seeds}")
        if args.command == "evaluate":  # any known task, not only those of data.tasks
            _check_known_task(params, args.task)
    except config.ConfigError as err:
        _error(err)
        return 2
    # SIGQUIT: Ctrl-\\; SIGPIPE: the reader of this output went away (`| head`), as the shell's own tools stop;
    # SIGXCPU: the CPU-time limit (`ulimit -t`) reached, before the hard limit's SIGKILL
    _interrupt_on(signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE, signal.SIGXCPU)
    if args.command == "check":
        with _stdout_writes():
            return _check(args, params)
    if args.command in ("significance", "power"):
        with _stdout_writes():
            return _statistics(args, params)

    if args.command == "verify-cache":  # reads no model and no data
        with _stdout_writes():
            return _verify_cache(args, params)
    try:  # before anything trains: a step that cannot write its outputs fails after minutes of work
        preflight.check_writable(_written(args, params), Path(args.out))
    except OSError as err:
        _error(err)
        return 1

    from . import numerics

    try:  # before torch loads: its kernels, MKL and the thread count read these once
        numerics.pin(params.runtime)
    except numerics.NumericsError as err:
        _error(err)
        return 1
    from . import cache, data, distill  # heavy imports only once the parameters are known to be good
    from . import methods

    try:  # the methods of distill.methods (built-in, or the user's custom/methods/<name>.py), before anything trains
        if args.command in ("distill", "assist"):
            methods.check(params)
            if args.method is not None:
                try:
                    assisted = methods.get(args.method).assistants
                except ValueError as err:
                    raise config.ConfigError(f"--method: {err}") from None
                if args.command == "assist" and not assisted:
                    raise config.ConfigError(f"--method {args.method!r}: does not learn from teacher assistants; "
                                             f"allowed: {', '.join(methods.assisted(methods.BUILT_IN))}")
    except config.ConfigError as err:
        _error(err)
        return 2

    from .evaluation import ModelError
    from .executor import ExecutorError

    # FloatingPointError: a loss that became NaN or infinite (the trainer stops at once and says so)
    expected = (config.ConfigError, data.DataError, cache.CacheError, ModelError, FileNotFoundError, FloatingPointError,
                numerics.NumericsError, WriteError, ExecutorError)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON record alone
            result = _run(args, params, distill)
    except expected as err:
        _error(err)
        return 2 if isinstance(err, config.ConfigError) else 1
    except (KeyboardInterrupt, BrokenPipeError) as err:  # a broken pipe: a SIGPIPE that Python delivers as EPIPE
        signum = signal.SIGPIPE if _broken_pipe(err) else getattr(err, "signum", signal.SIGINT)
        _error(_interrupted(args, signum))
        return 128 + signum
    except Exception as err:  # a write that found no room, inside a library (the Trainer's checkpoints)
        cause = disk_full(err)
        if cause is None:
            raise
        _error(f"{args.command}: a write under {args.out} failed ({cause}); free space (or raise the file size limit, "
               "`ulimit -f`) and re-run the same command: it resumes from the last complete checkpoint")
        return 1
    try:
        with _stdout_writes():
            print(json.dumps(result, indent=2, default=str), flush=True)
    except BrokenPipeError as err:
        _broken_pipe(err)
        _error(f"{args.command}: finished and its outputs are written, but its JSON record was not printed: stdout "
               "was closed by its reader (SIGPIPE, broken pipe: e.g. `| head`)")
        return 128 + signal.SIGPIPE
    return 0


class Interrupted(KeyboardInterrupt):
    """A signal that asks the step to stop (SIGTERM, SIGHUP), raised where the step is, as Ctrl-C's KeyboardInterrupt
    is: the same clean-ups run (temporaries removed, nothing renamed into place)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt_on(*signums: int) -> None:
    def handler(signum, frame):
        raise Interrupted(signum)

    for signum in signums:
        # e.g. SIGHUP under nohup: the user asked to ignore it (Python itself ignores SIGPIPE: not the user)
        if signal.getsignal(signum) is signal.SIG_IGN and signum != signal.SIGPIPE:
            continue
        signal.signal(signum, handler)


def _interrupted(args, signum: int) -> str:
    """The line an interrupted step ends with: what stopped it, and how the same command goes on."""
    from . import trainer

    how = {signal.SIGINT: " (Ctrl-C)", signal.SIGQUIT: " (Ctrl-\\)",
           signal.SIGPIPE: " (its output's reader went away, e.g. `| head`)",
           signal.SIGXCPU: " (the CPU-time limit, `ulimit -t`)"}
    name = signal.Signals(signum).name + how.get(signum, "")
    head = f"{args.command}: interrupted by {name}; no unfinished output was kept. Re-run the same command"
    if args.command not in ("teacher", "distill", "assist"):  # nothing trains: nothing to resume
        return head
    last = trainer.last_checkpoint_written()
    return head + (f" to resume from the last checkpoint ({last})" if last else
                   " (no checkpoint had been written: it starts over)")


def _prog() -> str:
    """`alpkd` when started through the console script, `python -m alpkd` otherwise (what the user typed)."""
    # argparse's own default would be the basename of sys.argv[0]: `__main__.py` under `python -m`
    return "alpkd" if Path(sys.argv[0]).name == "alpkd" else "python -m alpkd"


def _run(args, params, distill):
    from . import teachers

    logs = {"print_logs": True}  # the Trainer's logs too, on stderr (stdout is redirected there while a step runs)
    if args.command == "data":
        from .data import write_task_data

        layout = Layout(Path(args.out))
        write_task_data(params.task(args.task), args.out)
        return json.loads(layout.data_source(args.task).read_text())
    if args.command == "teacher":
        if args.seed is not None:
            return teachers.train_teacher(params, args.task, args.out, args.seed, **logs)
        return teachers.train_teachers(params, args.task, args.out, **logs)
    if args.command == "cache":
        written = []
        for seed in [args.seed] if args.seed is not None else params.teacher.seeds:
            folder = Layout(Path(args.out)).teacher_model(args.task, seed)
            _require_model(folder, f"no teacher of seed {seed} for {args.task!r} at {folder}: run `python -m alpkd "
                                   f"--out {args.out} teacher --task {args.task} --seed {seed}` first (or pass the "
                                   "--out that holds it)")
            written.append(str(teachers.write_cache(params, args.task, args.out, seed)))
        return {"cache": written}
    if args.command == "evaluate":
        _require_model(Path(args.model), f"--model {args.model}: no saved model there (a folder holding config.json)")
        return distill.evaluate_saved(params, args.task, args.model, args.out)
    seeds = [args.seed] if args.seed is not None else None
    methods = [args.method] if args.method else None
    if args.command == "assist":
        return distill.assist_group(params, args.task, args.out, methods, seeds, **logs)
    return distill.distill_group(params, args.task, args.depth, args.out, methods, seeds, **logs)


def _verify_cache(args, params) -> int:
    """Full verification of a task's teacher caches (each teacher seed, or --seed): one line of JSON on stdout,
    or `error: ...` and exit 1."""
    import time

    from . import cache

    start = time.perf_counter()
    result = {}
    try:
        for seed in [args.seed] if args.seed is not None else params.teacher.seeds:
            result[f"s{seed}"] = cache.verify_task(Layout(Path(args.out)).cache(args.task, seed), "full")
    except cache.CacheError as err:
        _error(err)
        return 1
    result["seconds"] = round(time.perf_counter() - start, 3)
    print(json.dumps(result))
    return 0


def _error(err: BaseException) -> None:
    """An expected error as one line on stderr: a message listing several bad keys (one per line, as a
    notebook shows it) is folded into `; `-separated parts."""
    parts = [part.strip() for part in str(err).splitlines() if part.strip()]
    head, rest = (parts[0], parts[1:]) if parts else ("", [])
    with contextlib.suppress(OSError, ValueError):  # stderr itself may be the pipe whose reader went away
        print("error: " + (f"{head} {'; '.join(rest)}" if rest else head), file=sys.stderr, flush=True)


def _check(args, params) -> int:
    """`check`: the parameters, the methods (a user's custom/methods/<name>.py checked on a random batch), the local GLUE
    copy (it holds each task), and the declared files of the custom tasks in data.tasks (read and checked as the
    data stage reads them: columns, labels, texts, lines), so a bad file is named before any stage runs."""
    from . import methods

    try:
        methods.check(params)
    except config.ConfigError as err:
        _error(err)
        return 2
    glue = [name for name in params.data.tasks if name not in params.custom_tasks]
    try:  # the local GLUE copy holds each task not already copied into the run (data/<task>/)
        try:
            root = config.repo_root()
        except config.ConfigError:  # a params file outside any repository: no pipeline copy to look for
            root = Path.cwd()
        preflight.check_glue_holds([params.task(name) for name in glue], root)
    except FileNotFoundError as err:
        _error(err)
        return 1
    n = params.distill.transfer_samples
    for name in glue if n else []:  # a transfer set fits each task's unused rows (custom tasks: below)
        rows = preflight.train_rows(name, root)
        problem = rows is not None and preflight.transfer_problem(name, n, params.data.max_train_samples, rows)
        if problem:
            _error(problem)
            return 2
    custom = [name for name in params.data.tasks if name in params.custom_tasks]
    if custom:
        from . import data

        try:
            with contextlib.redirect_stdout(sys.stderr):  # stdout: the verdict alone
                for name in custom:
                    rows = len(data.load_task(params.task(name))["train"])
                    problem = n and preflight.transfer_problem(name, n, params.data.max_train_samples, rows)
                    if problem:
                        _error(problem)
                        return 2
        except data.DataError as err:
            _error(err)
            return 1
    checked = f"; files of {', '.join(custom)} checked" if custom else ""
    print(f"{args.params}: valid ({params.profile} profile{checked})")
    return 0


def _with_sets(path: str, sets: list[str]):
    """The params file with `KEY=VALUE` changes applied as `dvc exp run -S` applies them (the value read as YAML),
    validated: a bad change is one error naming the key, before DVC writes it or removes any output."""
    from .params_file import read_yaml, repo_root, yaml_value

    file = Path(path) if Path(path).is_absolute() else repo_root() / path
    raw = read_yaml(file)
    for change in sets:
        key, eq, value = change.partition("=")
        if not eq or not key:
            raise config.ConfigError(f"-S {change!r}: expected KEY=VALUE, e.g. -S distill.temperature=2.0")
        *groups, leaf = key.split(".")
        node = raw
        for group in groups:
            node = node.setdefault(group, {})
            if not isinstance(node, dict):
                raise config.ConfigError(f"-S {change!r}: {group} is not a group of keys")
        node[leaf] = yaml_value(value)
    return preflight.validate(raw, f"{file} with -S {' -S '.join(sets)}")


def _statistics(args, params) -> int:
    """`significance` and `power`: read a finished run's records and predictions, print a CSV / a markdown table."""
    from . import methods, report

    try:
        methods.check(params)
    except config.ConfigError as err:
        _error(err)
        return 2
    root = Path(args.out)
    if not (root / "metrics" / "students").is_dir():
        _error(f"{args.command}: no student records under {root / 'metrics' / 'students'}; run the pipeline first "
               "(scripts/repro.sh), or give the run's folder with --out")
        return 1
    if args.command == "significance":
        sys.stdout.write(report.significance_csv(params, root))
        return 0
    from .power import power_table

    pairs = [p for p in report.comparisons(list(params.distill.methods))]
    table = power_table(params, root, pairs)
    print(table.to_markdown(index=False, floatfmt=".2f") if len(table) else "no comparison with predictions")
    return 0


def _numerics(args, parser) -> int:
    """`numerics`: this machine's fingerprint under a run's pinned numerics (the default runtime's: portable, 2
    threads), printed, written, or compared with a committed one in one line."""
    from . import fingerprint

    if not (args.fingerprint or args.fingerprint_out or args.compare):
        parser.error("numerics: give --fingerprint, --out FILE or --compare FILE")
    try:
        committed = fingerprint.load(Path(args.compare)) if args.compare else None  # a bad file before the work
        print("computing this machine's fingerprint of the operations a run uses (seconds) ...", file=sys.stderr)
        mine = fingerprint.measure(config.Runtime())
        if args.fingerprint_out:
            fingerprint.write(Path(args.fingerprint_out), mine)
    except (fingerprint.FingerprintError, OSError) as err:
        _error(err)
        return 1
    if args.fingerprint:
        print(fingerprint.dumps(mine), end="")
    if committed is not None:
        print(fingerprint.verdict(mine, committed))
    return 0


def _check_seed(seed: int) -> None:
    from pydantic import TypeAdapter, ValidationError

    try:
        TypeAdapter(config.Seed).validate_python(seed)
    except ValidationError:
        raise config.ConfigError(f"--seed {seed}: allowed: 0..{2**32 - 1}") from None


def _check_known_task(params, name: str) -> None:
    from .tasks import GLUE_TASKS

    if name not in GLUE_TASKS and name not in params.custom_tasks:
        allowed = ", ".join([*GLUE_TASKS, *params.custom_tasks])
        raise config.ConfigError(f"--task {name!r}: unknown task; allowed: {allowed} "
                                 "(or declare it under custom_tasks)")
    # data.max_length is checked against the tasks of data.tasks; a task outside them may have more text columns
    task = params.custom_tasks.get(name) or GLUE_TASKS[name]
    columns = len(task.text_columns)
    if params.data.max_length < config.min_max_length(columns):
        raise config.ConfigError(f"data.max_length = {params.data.max_length}: leaves no room for the text of task "
                                 f"{name!r} ({columns} text column(s)); allowed: {config.min_max_length(columns)}.. "
                                 "the teacher's positions")


def _written(args, params) -> list[Path]:
    """The folders (under --out) the step writes into."""
    layout = Layout(Path(args.out))
    task = args.task
    if args.command == "data":
        return [layout.data(task).parent]
    seeds = [args.seed] if getattr(args, "seed", None) is not None else params.teacher.seeds
    if args.command == "cache":
        return [layout.cache(task, s) for s in seeds]
    if args.command == "evaluate":  # its temporary files, and the data copy when it is missing
        return [layout.checkpoints("eval").parent, layout.data(task).parent]
    folders = [layout.data(task).parent, layout.checkpoints("x").parent]
    if args.command == "teacher":
        return folders + [p.parent for s in seeds for p in layout.teacher_outputs(task, s)]
    if args.command == "assist":
        return folders + list(layout.assisted_dirs(task).values())
    return folders + list(layout.group_dirs(task, args.depth).values()) + [layout.assistant_group(task, args.depth)]


def _require_model(folder: Path, message: str) -> None:
    # checked here, so a missing folder is not passed on to the hub as a "Repo id"; a path that is there but is
    # no folder (a file, a dangling link, a link loop), or a file of it that is no readable file, is named
    problem = model_folder_problem(folder) if os.path.lexists(folder) else None
    if problem:
        raise FileNotFoundError(problem)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(message)


if __name__ == "__main__":
    sys.exit(main())
