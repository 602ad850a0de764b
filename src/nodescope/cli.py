"""The front door: nodescope run | validate | report | plot | fetch."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from . import __version__
from .errors import UserError
from .reports.words import plural
from .runner.allocator import keep_freed_memory

console = Console()
err_console = Console(stderr=True, soft_wrap=True)


def _add_selection(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--sel",
        nargs="+",
        default=[],
        metavar="DIM=VALUE",
        help=f"{what}, e.g. --sel depth=8 width=320 seed=0",
    )


def _add_spec_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec value, e.g. --set model.width=80 (repeatable)",
    )


def cmd_validate(args) -> int:
    from .reports.plan import plan_tree
    from .spec import load_spec, plan

    failed = 0
    for path in args.specs:
        try:
            spec, _ = load_spec(path, args.overrides)
            console.print(plan_tree(path, spec, plan(spec)))
        except UserError as exc:
            failed += 1
            for line in str(exc).splitlines():
                line = line if line.startswith(str(path)) else f"{path}: {line}"
                err_console.print(f"[red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    return 1 if failed else 0


def cmd_run(args) -> int:
    from .reports.selection import selection_overrides
    from .results.integrity import FolderLock
    from .runner.executors import worker_count
    from .runner.run import run_dir_for
    from .spec import load_spec

    if args.workers and args.scheduler:
        raise UserError(
            "give --workers (a local cluster) or --scheduler (an existing one), not both"
        )
    spec, text = load_spec(args.spec, args.overrides)
    if args.sel:
        args.overrides = [*args.overrides, *selection_overrides(spec, args.sel)]
        spec, text = load_spec(args.spec, args.overrides)
    device = args.device or spec.device.type
    args.worker_count = worker_count(args.workers, device) if args.workers else None
    _check_can_start(spec, device, remote=bool(args.scheduler))
    with FolderLock(run_dir_for(spec, args.out), log=err_console.print):
        return _run_locked(args, spec, text)


def _check_can_start(spec, device: str, remote: bool) -> None:
    """What would stop the run before its first group, checked before anything is
    written to the results folder: missing data, a GPU that is not there. Workers of a
    remote cluster have their own data folders and devices."""
    from .data.fetch import require_fetched
    from .data.prepare import idx_source
    from .runner.run import resolve_device
    from .spec import expand

    if remote:
        return
    for name in sorted({m.spec.data.name for m in expand(spec)} - {"synthetic_patterns"}):
        require_fetched(idx_source(name))
    resolve_device(device)


def _run_locked(args, spec, text) -> int:
    from .reports.progress import RunProgress
    from .runner.executors import run_dask, run_local
    from .runner.resume import tidy_states
    from .runner.run import prepare_run

    device = args.device or spec.device.type
    rp = prepare_run(spec, text, args.out, args.fresh, args.overrides, args.command_line)
    n_members = sum(len(g.members) for g in rp.groups)
    skipped = len(rp.groups) - len(rp.todo)
    console.print(
        f"[bold]{spec.experiment.name}[/]: {plural(n_members, 'member')} in "
        f"{plural(len(rp.groups), 'group')}"
        + (f", {skipped} already stored (--fresh to redo)" if skipped else "")
        + f" → {rp.run_dir}"
    )
    started = time.perf_counter()
    on_dask = args.executor == "dask" or args.workers or args.scheduler
    steps = {g.index: g.spec.steps_per_epoch() for g in rp.groups}
    sweep_steps = sum(g.spec.training.epochs * steps[g.index] for g in rp.todo)
    try:
        with RunProgress(console, steps, total_steps=sweep_steps) as progress:
            if on_dask:
                run_dask(
                    rp, device, args.scheduler, args.worker_count, progress.for_group, progress.log
                )
            else:
                run_local(rp, device, progress.for_group, progress.log)
        tidy_states(rp.run_dir)
    except KeyboardInterrupt:
        err_console.print(
            f"interrupted: finished groups are stored in {rp.run_dir}; run the same command "
            "again to resume"
        )
        return 130
    _print_report(_open_for_reports(rp.run_dir))
    console.print(
        f"results in {rp.run_dir} ({time.perf_counter() - started:.1f} s); "
        f"open with nodescope.open({str(rp.run_dir)!r})"
    )
    return 0


IN_MEMORY_LIMIT = 2**30  # bytes; reports read larger results lazily, variable by variable


def _open_for_reports(run_dir, sel: list[str] = ()):
    """The results (narrowed to `--sel`), loaded into memory when they fit: panels and
    figures read every variable many times, which would re-read the files of a lazy
    Dataset each time."""
    from .reports.selection import select
    from .runner.store import open_run

    # a narrowing selection reads only what it keeps, lazily; whole results that fit are
    # read at once, without dask (whose import alone is 0.3 s)
    ds = open_run(run_dir, load_below=None if sel else IN_MEMORY_LIMIT)
    ds = select(ds, list(sel or ()))
    if ds.nbytes > IN_MEMORY_LIMIT or not any(v.chunks for v in ds.variables.values()):
        return ds
    # dask's synchronous scheduler, passed as a function: naming any scheduler makes dask
    # import dask.distributed (0.3 s) to look for a client; the reads share one lock anyway
    import dask

    return ds.load(scheduler=dask.get)


def _print_report(ds) -> None:
    """The summary table, then the sample-set and winner-take-most panels the run has."""
    from .reports.activation_gaps import gap_condition_panel, selection_panel
    from .reports.cooperating import cooperating_panel
    from .reports.sample_sets import sample_set_panel
    from .reports.summary import provenance_lines, summary_table
    from .reports.winner_take_most import accuracy_grid_panel, wtm_panel

    for line in provenance_lines(ds):
        console.print(line, highlight=False)
    console.print(summary_table(ds, width=console.width))
    panels = (sample_set_panel(ds), accuracy_grid_panel(ds, console.width), wtm_panel(ds))
    cooperating = cooperating_panel(ds, width=console.width)
    for panel in (*panels, cooperating, selection_panel(ds), gap_condition_panel(ds)):
        if panel is not None:
            console.print(panel)


def cmd_report(args) -> int:
    _print_report(_open_for_reports(args.run_dir, args.sel))
    return 0


def cmd_plot(args) -> int:
    from .reports.figures import write_figures

    ds = _open_for_reports(args.run_dir, args.sel)
    out = Path(args.out) if args.out else Path(args.run_dir) / "figures"
    for path in write_figures(ds, out):
        console.print(f"wrote {path}")
    return 0


def cmd_probe(args) -> int:
    from .results.integrity import FolderLock
    from .results.replay import add_probe

    if not Path(args.run_dir).is_dir():
        raise UserError(f"{args.run_dir}: no such results folder; check the path")
    with FolderLock(args.run_dir, log=err_console.print):
        written = add_probe(
            args.run_dir, args.add, args.options, args.device or "auto", log=console.print
        )
    console.print(
        f"{args.add}: added to {len(written)} group file(s) in {args.run_dir}; "
        f"`nodescope report {args.run_dir}` shows it"
    )
    return 0


def cmd_fetch(args) -> int:
    from .data.fetch import fetch

    fetch(args.name, Path(args.source) if args.source else None, log=console.print)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nodescope", description="Node-level training dynamics, one TOML spec per experiment"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    parser.add_argument("--version", action="version", version=f"nodescope {__version__}")
    p = sub.add_parser("validate", help="check specs and print their plans")
    p.add_argument("specs", nargs="+", metavar="SPEC")
    _add_spec_options(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("run", help="train every member of a spec and store the probes")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--out", help="results folder (default runs/<experiment name>)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="overrides device.type")
    p.add_argument("--fresh", action="store_true", help="retrain groups already stored")
    p.add_argument(
        "--workers",
        metavar="N",
        help="train the groups on a local Dask cluster of N worker processes ('auto': one "
        "per visible GPU, else one per CPU core)",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="train the groups on the existing Dask cluster at ADDRESS (tcp://host:8786)",
    )
    p.add_argument(
        "--executor",
        choices=["local", "dask"],
        default="local",
        help="'dask' without --workers or --scheduler: a local cluster, one worker per core",
    )
    _add_spec_options(p)
    _add_selection(p, "train only these sweep values (narrows the sweep like --set)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="print the summary of a results folder")
    p.add_argument("run_dir", metavar="RUN_DIR")
    _add_selection(p, "report only these sweep values")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("plot", help="write the figures of a results folder (PNG and PDF)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", help="figure folder (default RUN_DIR/figures)")
    _add_selection(p, "draw only these sweep values (per-node figures: their first member)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser(
        "probe", help="add a probe to a finished run, computed from its stored weights"
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--add", required=True, metavar="NAME", help="the probe to add")
    p.add_argument(
        "--set",
        dest="options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a probe option, e.g. --set split=test (repeatable)",
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("fetch", help="fill the data folder with MNIST or Fashion-MNIST")
    p.add_argument("name", choices=["mnist", "fashion-mnist", "fashion_mnist"])
    p.add_argument("--from", dest="source", metavar="DIR", help="folder holding the IDX files")
    p.set_defaults(func=cmd_fetch)
    return parser


def _print_error(message: str) -> int:
    for line in message.splitlines():
        err_console.print(f"[red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # torch then backs CPU buffers of 2 MB and more with transparent huge pages, where the
    # kernel allows it: a fresh 60 MB activation costs 6 ms of page faults instead of 23
    # (docs/benchmarks.md). Read by torch at its first allocation; a user's setting wins.
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    keep_freed_memory()
    in_main_thread = threading.current_thread() is threading.main_thread()
    # SIGTERM ends a run like Ctrl-C (the handler raises KeyboardInterrupt): finished
    # groups stay, temporary files go.
    sigterm_like_ctrl_c = signal.default_int_handler
    previous = signal.signal(signal.SIGTERM, sigterm_like_ctrl_c) if in_main_thread else None
    try:
        args = build_parser().parse_args(argv)
        args.command_line = ["nodescope", *argv]
        return args.func(args)
    except KeyboardInterrupt:
        interrupted = "interrupted: nothing half-written was left behind; files already stored"
        err_console.print(f"{interrupted} are kept")
        return 130
    except UserError as exc:
        return _print_error(str(exc))
    except OSError as exc:
        if exc.filename is None:  # not a file-system fault: a bug worth its traceback
            raise
        return _print_error(f"{exc.filename}: {exc.strerror or exc}")
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
