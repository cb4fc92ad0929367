"""The `transfer-weights` command line. No prompts; exit codes are documented in the README."""

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


def quiet_frameworks() -> None:
    """TensorFlow prints absl and oneDNN start-up lines on stderr whatever TF_CPP_MIN_LOG_LEVEL
    says; with oneDNN's custom ops off it prints none. Set before TensorFlow is imported; a
    value the user set wins. (Moved tensors are not computed, so the results are the same.)"""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def exit_on_sigterm() -> None:
    """A cancelled CI job gets SIGTERM: unwind (exit 143) so temporary files are removed."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transfer-weights",
        description="Move pretrained weights into another model as a mapping file says, "
                    "converting PyTorch <-> Keras layouts, all or nothing.",
        epilog="Other commands: `transfer-weights inspect --help` (list a file's or model's layers, or a "
               "mapping's plan), `transfer-weights verify --help` (check a model converted earlier), "
               "`transfer-weights suggest --help` (draft a mapping from two models). "
               "Exit codes: 0 ok, 2 usage, 3 mapping error, 4 incompatible weights or --strict "
               "failure, 5 file or download error, 6 verification failed, 7 framework problem, "
               "1 internal error.")
    parser.add_argument("--version", action="version", version=f"transfer-weights {__version__}")
    parser.add_argument("--map", required=True, metavar="FILE", help="mapping file (YAML, format 1)")
    parser.add_argument("--source-weights", metavar="PATH",
                        help="source weights file (or 'imagenet'); overrides source.weights")
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
    parser.add_argument("-q", "--quiet", action="store_true", help="print errors only")
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
    return parser


def suggest_main(argv: Sequence[str]) -> int:
    args = _suggest_parser().parse_args(argv)
    quiet_frameworks()
    from transfer.errors import TransferWeightsError
    from transfer.suggest import suggest_mapping

    try:
        draft = suggest_mapping(args.source, args.target, args.out)
    except TransferWeightsError as exc:
        print(f"transfer-weights suggest: error: {exc}", file=sys.stderr)
        return exc.exit_code
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
               "error, 4 incompatible weights, 5 file error, 7 framework problem.")
    parser.add_argument("--map", required=True, metavar="FILE", help="mapping file (YAML, format 1)")
    parser.add_argument("--target", required=True, metavar="CONVERTED",
                        help="the converted model: .keras, or a weights file of the mapping's target "
                             "(.weights.h5, .pth/.pt, .safetensors)")
    parser.add_argument("--source-weights", metavar="PATH",
                        help="source weights file (or 'imagenet'); overrides source.weights")
    parser.add_argument("--target-factory", metavar="MODULE:CALLABLE",
                        help="the architecture a weights file is loaded into (default: the mapping's target)")
    parser.add_argument("--report", metavar="PATH", help="write every check as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    return parser


def verify_main(argv: Sequence[str]) -> int:
    args = _verify_parser().parse_args(argv)
    quiet_frameworks()
    exit_on_sigterm()
    from transfer import api

    def work() -> Any:
        return api.verify_weights(args.map, args.target, source_weights=args.source_weights,
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
                        help="a mapping (.yaml); a weights or .keras file; 'keras:NAME' / 'torch:NAME' "
                             "(a known model or a shipped target); or a YAML mapping like a mapping's source")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def inspect_main(argv: Sequence[str]) -> int:
    args = _inspect_parser().parse_args(argv)
    quiet_frameworks()
    import json

    from transfer.errors import TransferWeightsError

    try:
        if args.spec.endswith((".yaml", ".yml")):
            from transfer import api
            from transfer.inspection import render_plan
            from transfer.report import to_dict

            report = api.transfer_weights(args.spec, check=True).report
            print(json.dumps(to_dict(report), indent=2) if args.json else render_plan(report))
        else:
            from transfer.inspection import inspect_spec, inspection_dict, render_inspection

            found = inspect_spec(args.spec)
            print(json.dumps(inspection_dict(found), indent=2) if args.json else render_inspection(found))
    except TransferWeightsError as exc:
        print(f"transfer-weights inspect: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["suggest"]:
        return suggest_main(argv[1:])
    if argv[:1] == ["verify"]:
        return verify_main(argv[1:])
    if argv[:1] == ["inspect"]:
        return inspect_main(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if args.check and args.verify:
        parser.error("--check reads no tensor, so there is nothing to --verify; to check a model "
                     "converted earlier, run `transfer-weights verify --map M --target CONVERTED`.")
    quiet_frameworks()
    exit_on_sigterm()
    from transfer import api

    def work() -> Any:
        return api.transfer_weights(
            args.map, source_weights=args.source_weights, strict=args.strict, check=args.check,
            verify=args.verify, checksums=bool(args.report), out=args.out, target=args.target_factory).report

    return _run(args, work, lambda report: [])


def _run(args: argparse.Namespace, work: Callable[[], Any], extra_lines: Callable[[Any], list[str]]) -> int:
    """Run `work`, print the summary, write the report; map errors to exit codes."""
    from transfer.errors import TransferWeightsError
    from transfer.report import summary, to_json

    try:
        report = work()
        if args.report:
            _write_text(args.report, to_json(report))
    except TransferWeightsError as exc:
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


def _fail(args: argparse.Namespace, exc: Exception, code: int, internal: bool = False) -> int:
    prefix = "internal error (please report it)" if internal else "error"
    print(f"transfer-weights: {prefix}: {exc}", file=sys.stderr)
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
