"""The program `python -m export MODEL.keras --out EXPORT_DIR ...`.

Exit status: 0 exported and verified; 1 an artifact failed verification
(report written, version not published); 2 a usage mistake (one line on
stderr, nothing written).
"""

import os
import sys

from export import VARIANTS, ExportError, VerificationError, cli


def build_parser():
    parser = cli.Parser(
        prog="python -m export",
        description="Export a trained keras_hebb model for TF Serving (SavedModel) "
                    "and devices (TFLite), and verify the artifacts against it.",
    )
    parser.add_argument("model", nargs="?", help="trained .keras model file")
    parser.add_argument("--out", metavar="EXPORT_DIR",
                        help="model base path (TF Serving's --model_base_path)")
    parser.add_argument("--verify", metavar="EXPORT_DIR",
                        help="only verify a version already in EXPORT_DIR")
    parser.add_argument("--version", type=int,
                        help="version number (default: latest + 1; with --verify: latest)")
    parser.add_argument("--tflite", default=",".join(VARIANTS),
                        help=f"comma-separated TFLite variants from {','.join(VARIANTS)}, "
                             "or 'none' (default: all)")
    parser.add_argument("--calibration-dataset", metavar="NAME",
                        help="keras_hebb.data dataset: train split calibrates int8, "
                             "test split verifies (default: from the image shape)")
    parser.add_argument("--calibration-images", type=int, default=300,
                        help="training images that calibrate int8 (default: 300)")
    parser.add_argument("--verify-images", type=int, default=None,
                        help="test images used by the verification (default: 4000)")
    parser.add_argument("--max-accuracy-drop", type=float, default=None,
                        help="accuracy points float16/dynamic/int8 may lose (default: 1.0)")
    parser.add_argument("--topk-thresholds", action="store_true",
                        help="TFLite thresholds with TOPK_V2 instead of integer counting "
                             "(same outputs, slower; for runtimes without BITCAST)")
    parser.add_argument("--threads", type=int, default=1,
                        help="TFLite interpreter threads in the verification (default: 1)")
    return parser


def check_arguments(args):
    """Usage mistakes that need no TensorFlow; ExportError if any."""
    if args.verify and args.out:
        raise ExportError("Pass either --out (export) or --verify (verify only), not both.")
    if not args.verify:
        if not args.model:
            raise ExportError("Missing MODEL.keras: python -m export MODEL.keras --out EXPORT_DIR")
        if not args.out:
            raise ExportError("Missing --out EXPORT_DIR (where the version directories go).")
    if args.model and not os.path.isfile(args.model):
        raise ExportError(f"Model file not found: {args.model}")
    if args.model and not args.model.endswith(".keras"):
        raise ExportError(f"Expected a .keras model file. Received: {args.model}")
    if args.version is not None and args.version < 1:
        raise ExportError(f"Invalid --version {args.version}: expected an integer >= 1.")
    for name in ("calibration_images", "verify_images", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            flag = "--" + name.replace("_", "-")
            raise ExportError(f"Invalid {flag} {getattr(args, name)}: expected an integer >= 1.")
    if args.tflite.strip().lower() == "none":
        variants = ()
    else:
        variants = tuple(v.strip() for v in args.tflite.split(",") if v.strip())
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown or not variants:
            raise ExportError(
                f"Unknown TFLite variant {unknown[0] if unknown else args.tflite!r}: "
                f"expected a comma-separated list of {', '.join(VARIANTS)} or 'none'. "
                f"Received: --tflite {args.tflite}"
            )
    if args.verify:
        if not os.path.isdir(args.verify):
            raise ExportError(f"Export directory not found: {args.verify}")
    else:
        path = os.path.join(args.out, str(args.version)) if args.version else None
        if path and os.path.exists(path):
            raise ExportError(
                f"Version directory {path} already exists: versions are never "
                "overwritten; pass another --version or omit it to use the next one."
            )
    return variants


def main(argv=None):
    """Runs `python -m export`; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        variants = check_arguments(args)
        cli.prepare_tensorflow()
        from export import pipeline

        if args.verify:
            version_dir, report = pipeline.verify_export_dir(
                args.verify, args.model, args.version, args.calibration_dataset,
                args.verify_images, args.max_accuracy_drop, args.threads)
        else:
            version_dir, report = pipeline.export_model(
                args.model, args.out, args.version, variants,
                args.calibration_dataset, args.calibration_images,
                args.verify_images, args.max_accuracy_drop, args.threads,
                log=lambda line: print(line, flush=True),
                integer_threshold=not args.topk_thresholds)
    except cli.UsageError as error:  # ExportError included
        return cli.usage_failure(error)
    except VerificationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    from export.verification_report import markdown_table

    print(markdown_table(report))
    print(f"{'verified' if args.verify else 'exported'}: {version_dir}")
    return 0
