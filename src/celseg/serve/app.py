"""The Gradio page around :mod:`celseg.serve.handler`: upload, class names, overlay, label map.

Gradio is an optional extra (``pip install -e ".[demo]"``); it is imported only here, when the
page is built. The page binds to 127.0.0.1 unless told otherwise, loads no web fonts (it must
work offline) and runs one inference at a time: the model is shared, and two at once would only
split the same CPU cores.
"""

from __future__ import annotations

import html
import os
import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celseg.errors import CelsegError
from celseg.serve.handler import Limits, PageError, Result, format_bytes, segment_upload

if TYPE_CHECKING:
    from celseg.engine.predictor import Predictor

KEEP_LABEL_FILES = 64  # label PNGs kept on disk for download; older ones are removed
PROTOCOLS = {"ensemble": "ensemble (segmenter + the VLM's mask-pooled image features)",
             "segmenter": "the segmenter alone (--no-ensemble, or a VLM without an image tower)",
             "vlm": "the VLM's mask-pooled image features alone",
             "training-free": "the VLM's dense features alone, no training"}


@dataclass(frozen=True)
class Examples:
    """Validation images of the run's benchmark with its class names, offered on the page."""

    paths: list[str] = field(default_factory=list)
    class_text: str = ""
    root: str = ""


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1); a host name is not."""
    import ipaddress

    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_examples(ckpt: str | Path, count: int) -> Examples:
    """Up to ``count`` validation images of the run's ``data.root``, if that folder exists."""
    from celseg.config import load_config
    from celseg.data.classes import load_classes
    from celseg.data.dataset import SegmentationDataset
    from celseg.engine.checkpoint import resolve_checkpoint

    if count <= 0:
        return Examples()
    try:
        cfg = load_config(resolve_checkpoint(ckpt)[1])
        info = load_classes(cfg.data.root)
        dataset = SegmentationDataset(cfg.data.root, cfg.data.val_split, class_info=info,
                                      max_items=count)
    except (CelsegError, OSError):
        return Examples()  # the benchmark is not on this machine: the page works without
    return Examples([str(p) for p, _ in dataset.samples], ", ".join(info.names),
                    str(Path(cfg.data.root).resolve()))


class LabelFiles:
    """Label PNGs written for download, in a folder of this process; the newest few are kept."""

    def __init__(self, keep: int = KEEP_LABEL_FILES) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="celseg-serve-")  # removed at exit
        self.dir = Path(self._tmp.name)
        self.keep = keep

    def write(self, result: Result, upload: str | Path) -> Path:
        from PIL import Image

        path = self.dir / f"{Path(upload).stem[:40]}_labels_{uuid.uuid4().hex[:8]}.png"
        Image.fromarray(result.label, mode="L").save(path)
        old = sorted(self.dir.glob("*.png"), key=lambda p: p.stat().st_mtime)[:-self.keep]
        for p in old:
            p.unlink(missing_ok=True)
        return path


def shares_html(result: Result) -> str:
    """A table of each found class's share of the pixels, largest first, with its overlay
    colour; then the names that got no pixel."""
    from celseg.data.classes import default_color

    order = sorted(range(len(result.names)), key=lambda i: -result.shares[i])
    found = [i for i in order if result.shares[i] > 0]
    absent = [html.escape(result.names[i]) for i in range(len(result.names)) if i not in found]
    rows = []
    for i in found:
        r, g, b = default_color(i)
        swatch = (f'<span style="display:inline-block;width:14px;height:14px;'
                  f'background:rgb({r},{g},{b});border:1px solid #000"></span>')
        rows.append(f'<tr><td>{swatch}</td><td>{i}</td><td>{html.escape(result.names[i])}</td>'
                    f'<td style="text-align:right">{result.shares[i]:.1f} %</td></tr>')
    note = (f'<p id="shares-absent">No pixel: {", ".join(absent)}.</p>' if absent else "")
    return ('<table id="shares-table"><thead><tr><th></th><th>label id</th><th>class</th>'
            '<th>pixels</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>" + note)


def respond(predictor: Predictor, limits: Limits, files: LabelFiles, upload: str | None,
            text: str | None) -> tuple[Any, Any, str, str]:
    """One click of "Segment": (picture, label PNG path, shares table, status message). Never
    raises: bad input and failures become the message, and the server serves the next one."""
    start = time.perf_counter()
    try:
        result = segment_upload(predictor, upload, text, limits)
        label_path = files.write(result, upload or "upload")
    except PageError as exc:
        return None, None, "", f"**Cannot segment this request.** {exc}"
    except Exception as exc:  # noqa: BLE001 - the page reports any failure and keeps serving
        traceback.print_exc()
        return None, None, "", f"**Segmentation failed** ({type(exc).__name__}: {exc})."
    h, w = result.label.shape
    status = (f"Segmented a {w} x {h} image with {len(result.names)} class names in "
              f"{time.perf_counter() - start:.2f} s. Protocol: {predictor.protocol}.")
    return result.picture, str(label_path), shares_html(result), status


def no_telemetry() -> None:
    """Keep Gradio and its client from calling home (version checks, usage analytics): the
    page talks to the browser on this machine and to nothing else."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"


def build_page(predictor: Predictor, limits: Limits, examples: Examples, title: str = "") -> Any:
    """The ``gr.Blocks`` page (not launched)."""
    no_telemetry()
    import gradio as gr

    files = LabelFiles()

    def on_click(upload: str | None, text: str | None) -> tuple[Any, Any, str, str]:
        return respond(predictor, limits, files, upload, text)

    with gr.Blocks(title="celseg: segment with your own class names", analytics_enabled=False,
                   delete_cache=(900, 1800)) as page:
        gr.Markdown(
            "## celseg: segment an image with your own class names\n"
            f"{html.escape(title)} · inference: "
            f"{PROTOCOLS.get(predictor.protocol, predictor.protocol)}. Limits: "
            f"{format_bytes(limits.max_bytes)} and {limits.max_pixels:,} pixels an image, "
            f"{limits.max_classes} class names.")
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="image (PNG, JPEG, ...)", type="filepath",
                                 elem_id="upload")
                text = gr.Textbox(label="class names, comma-separated", lines=3,
                                  value=examples.class_text, elem_id="classes",
                                  placeholder="cat, dog, road, sky")
                button = gr.Button("Segment", variant="primary", elem_id="segment")
                status = gr.Markdown(elem_id="status")
            with gr.Column(scale=2):
                picture = gr.Image(label="image | overlay | legend", type="pil", format="png",
                                   interactive=False, elem_id="overlay")
                label = gr.File(label="label map (PNG; pixel value = position in the class list)",
                                interactive=False, elem_id="labelmap")
                shares = gr.HTML(elem_id="shares")
        if examples.paths:
            gr.Examples([[p, examples.class_text] for p in examples.paths], [upload, text],
                        label="validation images of the run's benchmark")
        button.click(on_click, [upload, text], [picture, label, shares, status],
                     api_name="segment", concurrency_limit=1)
    return page


def serve(predictor: Predictor, limits: Limits, examples: Examples, host: str = "127.0.0.1",
          port: int = 7860, title: str = "", queue_size: int = 64) -> None:
    """Build the page and serve it until interrupted."""
    import gradio as gr

    page = build_page(predictor, limits, examples, title)
    page.queue(max_size=queue_size, default_concurrency_limit=1)
    # Uploads well over --max-bytes are refused by Gradio itself; the rest reach the handler,
    # which explains the limit on the page.
    page.launch(server_name=host, server_port=port, share=False, ssr_mode=False,
                max_file_size=4 * limits.max_bytes, show_error=True, quiet=False,
                allowed_paths=[examples.root] if examples.root else None,
                theme=gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                                        font_mono=["ui-monospace", "monospace"]))
