"""The `transfer-weights` command line. No prompts; exit codes are documented in the README."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Sequence

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2  # argparse's own code for bad arguments


def exit_on_sigterm() -> None:
    """A cancelled CI job gets SIGTERM: unwind (exit 143) so temporary files are removed."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transfer-weights",
        description="Move pretrained weights into another model as a mapping file says, "
                    "converting PyTorch <-> Keras layouts, all or nothing.",
        epilog="Exit codes: 0 ok, 2 usage, 3 mapping error, 4 incompatible weights or --strict "
               "failure, 5 file or download error, 6 verification failed, 7 framework problem, "
               "1 internal error.")
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
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["suggest"]:
        return suggest_main(argv[1:])
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter
    exit_on_sigterm()
    from transfer import api
    from transfer.errors import TransferWeightsError
    from transfer.report import error_report

    try:
        report = api.transfer_weights(
            args.map, source_weights=args.source_weights, strict=args.strict, check=args.check,
            verify=args.verify, checksums=bool(args.report), out=args.out, target=args.target_factory)
        if args.report:
            report.write(args.report)
    except TransferWeightsError as exc:
        return _fail(args, exc, exc.exit_code, error_report)
    except Exception as exc:  # a bug of ours: say so, with the traceback
        traceback.print_exc()
        return _fail(args, exc, EXIT_INTERNAL, error_report, internal=True)
    if not args.quiet:
        print(report.summary())
        if args.report:
            print(f"  report: {args.report}")
    return EXIT_OK


def _fail(args: argparse.Namespace, exc: Exception, code: int, error_report, internal: bool = False) -> int:
    prefix = "internal error (please report it)" if internal else "error"
    print(f"transfer-weights: {prefix}: {exc}", file=sys.stderr)
    if args.report:
        from transfer.output import atomic_write_text

        try:
            atomic_write_text(Path(args.report), error_report(exc, code))
        except Exception as write_error:  # the original error matters more; still say it
            print(f"transfer-weights: could not write the report: {write_error}", file=sys.stderr)
    return code


def entry_point() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
