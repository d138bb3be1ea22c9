"""``celseg serve --ckpt MODEL [--port 7860]``: a local web page that segments an uploaded image
with the class names typed into it (Gradio, from the ``demo`` extra: ``pip install -e ".[demo]"``).

MODEL is a run folder, an exported model or a Hub id; ``--vlm`` alone serves the training-free
model. Inference is ``celseg.load``'s, as in ``celseg predict``.

Library imports sit inside the functions so that ``celseg --help`` and the CLI start fast.
"""

from __future__ import annotations

import argparse

from celseg.serve.handler import Limits

DEFAULTS = Limits()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", default=None,
                        help="a run folder (or its checkpoints/ folder or .safetensors file), an "
                             "exported model or a Hub id; leave out to serve --vlm alone")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
    parser.add_argument("--vlm", default=None,
                        help="vision-language model: with --ckpt it replaces the run's model.vlm; "
                             "alone it segments by itself (training-free)")
    parser.add_argument("--no-ensemble", action="store_true",
                        help="the segmenter alone: skip the out-of-vocabulary ensemble with the "
                             "VLM's mask-pooled image features")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    parser.add_argument("--compile-backbone", action="store_true",
                        help="torch.compile the backbone (faster on CPU after a few seconds of "
                             "compiling; needs a C++ compiler; eval.compile_backbone)")
    parser.add_argument("--max-bytes", type=int, default=DEFAULTS.max_bytes,
                        help=f"largest upload in bytes (default {DEFAULTS.max_bytes:,})")
    parser.add_argument("--max-pixels", type=int, default=DEFAULTS.max_pixels,
                        help=f"largest image in pixels, width x height (default "
                             f"{DEFAULTS.max_pixels:,})")
    parser.add_argument("--max-classes", type=int, default=DEFAULTS.max_classes,
                        help=f"most class names a request may give (default "
                             f"{DEFAULTS.max_classes}, at most 255)")
    parser.add_argument("--max-text", type=int, default=DEFAULTS.max_text,
                        help=f"longest class-name text in characters (default "
                             f"{DEFAULTS.max_text:,})")
    parser.add_argument("--examples", type=int, default=6,
                        help="validation images of the run's data.root offered as examples, "
                             "when that folder exists (default 6; 0: none)")


def run(args: argparse.Namespace) -> int:
    from celseg.errors import CelsegError

    if not 0 < args.port < 65536:
        raise CelsegError(f"--port {args.port} is not a port number (1-65535)")
    if args.ckpt is None and args.vlm is None:
        raise CelsegError("give --ckpt MODEL, or --vlm VLM alone for training-free segmentation")
    limits = Limits(args.max_bytes, args.max_pixels, args.max_classes, args.max_text)
    from celseg.serve.app import no_telemetry

    no_telemetry()  # before Gradio is imported
    try:
        import gradio  # noqa: F401
    except ImportError as exc:
        raise CelsegError("celseg serve needs Gradio: pip install -e \".[demo]\" (or make serve)"
                          ) from exc
    from celseg.api.model import load
    from celseg.engine.hub import fetch_model
    from celseg.serve.app import Examples, is_loopback, run_examples, serve

    ckpt = fetch_model(args.ckpt) if args.ckpt else None
    model = load(ckpt, vlm=args.vlm, device=args.device, ensemble=not args.no_ensemble,
                 compile_backbone=args.compile_backbone or None)
    if not is_loopback(args.host):
        print(f"warning: --host {args.host} makes the page reachable from other machines")
    examples = run_examples(ckpt, args.examples) if ckpt else Examples()
    serve(model.predictor, limits, examples, args.host, args.port, title=f"model {model.source}")
    return 0
