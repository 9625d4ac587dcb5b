"""The Gradio demo: trained runs behind a Generate / Reconstruct / About page.

``build_app(runs)`` returns a ``gr.Blocks``; ``serve(run_dirs, ...)`` loads the runs and launches it
(``genlab demo`` and ``python -m apps.demo`` call it). Gradio is imported only inside these functions,
so ``import genlab.demo`` works without the ``demo`` extra.

Safety: runs are loaded once at start-up (a missing or incomplete one is a ``RunError``); clients choose a
run by its name, never by a path; the only file read afterwards is each run's ``metrics.jsonl``; outputs
go to a private temporary folder that Gradio serves from its cache; every input is bounded and checked
here, with a message shown in the page (``gr.Error``); one request at a time runs a model.
"""

from __future__ import annotations

import math
import os
import random
import shlex
import shutil
import signal
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from genlab import registry
from genlab.config import to_dict
from genlab.data import to_uint8
from genlab.pipeline import Pipeline, RunError, save_grid
from genlab.runs.store import RunFolder

MAX_SEED = 2**31 - 1


class DemoError(RuntimeError):
    """The demo cannot start (gradio missing, port taken, a run over the limits)."""


@dataclass(frozen=True)
class Limits:
    """Bounds on every request, shown next to the inputs."""

    max_images: int = 16  # images per request, all classes together
    max_steps: int = 100  # sampler steps
    max_guidance: float = 15.0  # classifier-free guidance scale
    max_resolution: int = 512  # runs above this are refused at start-up
    max_upload_pixels: int = 4096 * 4096  # Reconstruct: decoded upload size
    max_upload_size: str = "10mb"  # Reconstruct: upload file size


@dataclass
class Run:
    """One loaded run: its name in the page, the path it was given as, and the pipeline."""

    name: str
    path: Path
    pipe: Pipeline
    device: str
    supports_interval: bool = field(init=False)  # its sampling options have a guidance interval
    has_sampler: bool = field(init=False)  # its sampling options choose a continuous sampler (flow models)
    takes_gamma: bool = field(init=False)  # its sampling options have a re-noising γ in [0, 1] (CTM's γ-sampling)

    def __post_init__(self) -> None:
        fields = self.pipe.options_class.fields()
        self.supports_interval = "cfg_interval" in fields
        self.has_sampler = "sampler" in fields
        self.takes_gamma = "gamma" in fields

    def gamma_label(self) -> str:
        """The γ slider's label: the option's own help text (empty for a run whose sampling takes no γ)."""
        f = self.pipe.options_class.fields().get("gamma")
        return f"γ (0–1): {f.metadata.get('help', '')}" if f is not None else ""

    @property
    def resolution(self) -> int:
        return self.pipe.cfg.data.cfg.resolution


def load_runs(paths: list[str | Path], *, device: str | None = None, limits: Limits = Limits()) -> list[Run]:
    """Load every run, or raise ``RunError``/``DemoError`` naming the first one that cannot be served."""
    if not paths:
        raise DemoError("give at least one run: genlab demo --run runs/NAME")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    runs: list[Run] = []
    for p in paths:
        pipe = Pipeline.load(p, device=device)
        path = Path(p)
        run = Run(_unique_name(path, {r.name for r in runs}), path, pipe, device)
        if run.resolution > limits.max_resolution:
            raise DemoError(f"{path}: resolution {run.resolution} is above the demo's limit {limits.max_resolution}")
        runs.append(run)
    return runs


def _unique_name(path: Path, taken: set[str]) -> str:
    name = path.resolve().name
    if name in taken:
        name = f"{path.resolve().parent.name}/{name}"
    i = 2
    while name in taken:
        name, i = f"{path.resolve().name} ({i})", i + 1
    return name


# ----------------------------------------------------------------------------- the work behind the buttons


def sample_command(run: Run, classes: list[str], n: int, sampler: str, steps: int, guidance: float, seed: int,
                   interval: tuple[float, float] | None, gamma: float | None = None) -> str:  # fmt: skip
    """The ``genlab sample`` command line that writes the same grid."""
    names = ",".join(classes)
    if any("," in c or c.strip().lstrip("-").isdigit() for c in classes):  # names `--classes` would misread
        names = ",".join(str(run.pipe.class_names.index(c)) for c in classes)
    args = ["genlab", "sample", "--run", str(run.path), "--classes", names, "--n", str(n)]
    if run.has_sampler:
        args += ["--sampler", sampler]
    args += ["--steps", str(steps), "--cfg", repr(float(guidance)), "--seed", str(seed)]
    defaults = run.pipe.cfg.sample.options
    if interval is not None and tuple(interval) != tuple(defaults.cfg_interval):  # else the run's default
        args += ["--guidance-interval", f"{interval[0]!r},{interval[1]!r}"]
    if gamma is not None:  # given only for a run whose sampling takes γ
        args += ["--gamma", repr(float(gamma))]
    return shlex.join([*args, "--out", "grid.png"])


def _refused(message: str) -> Exception:
    """The error a refused request shows in the page; the console gets one line, not a traceback per request."""
    import gradio as gr

    print(f"genlab demo: refused a request: {message}", file=sys.stderr, flush=True)
    return gr.Error(message, print_exception=False)


def _read_upload(path: Path, max_pixels: int) -> np.ndarray:
    """An uploaded image as (H, W, 3) uint8, refused from its header (declared size) before any pixel is decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:  # reads the header only
            w, h = im.size
            if w * h <= max_pixels:
                return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as e:
        raise _refused(f"the upload is not an image this demo can read ({type(e).__name__})") from None
    raise _refused(f"the image is {w}×{h}; at most {max_pixels:,} pixels")


def _stop_on_sigterm() -> None:
    """SIGTERM ends the demo like Ctrl-C: the server closes and the private temporary folder is removed at exit."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def _number(value, name: str, lo: float, hi: float, *, integer: bool) -> float | int:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise _refused(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(x) or not lo <= x <= hi:
        raise _refused(f"{name} must be between {lo:g} and {hi:g}, got {value!r}")
    if integer:
        if not x.is_integer():
            raise _refused(f"{name} must be a whole number, got {value!r}")
        return int(x)
    return x


class Demo:
    """The handlers, kept apart from the layout so tests and API clients see the same checks."""

    def __init__(self, runs: list[Run], limits: Limits = Limits()):
        self.runs = {r.name: r for r in runs}
        self.limits = limits
        self.samplers = registry.names("sampler")
        self._tmp = tempfile.TemporaryDirectory(prefix="genlab-demo-")  # removed when the app exits
        self._count = 0

    KEEP_OUTPUTS = 8  # request folders kept in the private temporary folder (Gradio copies them to its cache)

    def run(self, name) -> Run:
        if not isinstance(name, str) or name not in self.runs:  # an API client may send a list or a dict
            raise _refused(f"unknown model {name!r}; this demo serves: {', '.join(self.runs)}")
        return self.runs[name]

    def generate(
        self, model, classes, images_per_class, sampler, steps, guidance, seed, interval_lo=0.0, interval_hi=1.0,
        gamma=None,
    ):  # fmt: skip
        """Images for each chosen class (``n`` per class, image i from seed ``seed + i``), a grid and a command.
        ``gamma``: γ in [0, 1] for a run whose sampling takes one (None: the run's default); others ignore it."""
        run, lim = self.run(model), self.limits
        if isinstance(classes, (str, int)) and not isinstance(classes, bool):
            classes = [classes]
        if not isinstance(classes, (list, tuple)) or not all(
            isinstance(c, (str, int)) and not isinstance(c, bool) for c in classes
        ):  # fmt: skip
            raise _refused(f"classes must be a list of class names or ids, got {type(classes).__name__}")
        if not classes:
            raise _refused("choose at least one class")
        names = run.pipe.class_names
        try:  # the dropdown sends names; API clients may send ids
            ids = [names.index(c) if c in names else run.pipe.class_ids([c])[0] for c in map(str, classes)]
        except ValueError as e:
            raise _refused(str(e)) from None
        n = _number(images_per_class, "images per class", 1, lim.max_images, integer=True)
        if n * len(ids) > lim.max_images:
            raise _refused(f"{n} images x {len(ids)} classes = {n * len(ids)}; at most {lim.max_images} per request")
        if run.has_sampler and (not isinstance(sampler, str) or sampler not in self.samplers):
            raise _refused(f"unknown sampler {sampler!r}; samplers: {', '.join(self.samplers)}")
        steps = _number(steps, "steps", 1, lim.max_steps, integer=True)
        guidance = _number(guidance, "guidance scale", 0, lim.max_guidance, integer=False)
        seed = _number(seed, "seed", 0, MAX_SEED, integer=True)
        options, interval = {"steps": steps, "cfg": guidance}, None
        if run.has_sampler:
            options["sampler"] = sampler
        if run.supports_interval:
            interval = (_number(interval_lo, "interval start", 0, 1, integer=False),
                        _number(interval_hi, "interval end", 0, 1, integer=False))  # fmt: skip
            if interval[0] > interval[1]:
                raise _refused(f"the guidance interval starts after it ends: {interval[0]:g} > {interval[1]:g}")
            options["cfg_interval"] = interval
        if run.takes_gamma and gamma is not None:
            options["gamma"] = gamma = _number(gamma, "γ", 0, 1, integer=False)
        else:
            gamma = None
        labels = [c for c in ids for _ in range(n)]
        fields = run.pipe.options_class.fields()  # a generator without steps (a GPT) ignores that slider
        options = {k: v for k, v in options.items() if k in fields}
        try:
            result = run.pipe.generate(labels, seed=seed, options=options)
        except ValueError as e:  # options this run's generator refuses (e.g. steps above its token count)
            raise _refused(str(e)) from None

        self._count += 1
        out = Path(self._tmp.name) / f"{self._count:06d}"
        out.mkdir()
        shutil.rmtree(Path(self._tmp.name) / f"{self._count - self.KEEP_OUTPUTS:06d}", ignore_errors=True)
        save_grid(result.images, out / "grid.png", nrow=n, row_labels=[names[i] for i in ids])
        command = sample_command(run, [names[i] for i in ids], n, sampler, steps, guidance, seed, interval, gamma)
        (out / "command.sh").write_text(command + "\n")
        u8 = to_uint8(result.images).permute(0, 2, 3, 1).numpy()  # (B, H, W, 3)
        gallery = [(u8[i], f"{names[c]} · seed {seed + i}") for i, c in enumerate(labels)]
        others = "".join(f" + {k} {name}" for name, k in result.extra_networks().items() if k)
        info = (f"{len(labels)} images of {run.resolution}×{run.resolution} in **{result.seconds:.2f} s** "
                f"on {run.device} · **{result.nfe} NFE{others}**")  # fmt: skip
        return gallery, info, str(out / "grid.png"), str(out / "command.sh"), command

    def reconstruct(self, model, image, num_tokens=None):
        """Encode and decode an upload at the run's resolution; returns (input, reconstruction, report).

        A variable-length 1-D tokenizer (``token_spec.variable_length``, e.g. FlexTok) decodes only the first
        ``num_tokens`` of its N tokens (default: all); other tokenizers ignore it. A stochastic decoder draws its
        noise from seed 0, so the same upload and count give the same image."""
        from PIL import Image

        run = self.run(model)
        keep = prefix_length(run, num_tokens)
        if image is None:
            raise _refused("upload an image first")
        if isinstance(image, dict) and isinstance(image.get("path"), str):  # a FileData payload
            image = image["path"]
        if isinstance(image, (str, Path)):  # an upload's path: its size is read from the header, then it is decoded
            image = _read_upload(Path(image), self.limits.max_upload_pixels)
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] not in (3, 4):
            raise _refused(f"the upload must be an image file, got {type(image).__name__}")
        if image.shape[0] * image.shape[1] > self.limits.max_upload_pixels:
            raise _refused(
                f"the image is {image.shape[1]}×{image.shape[0]}; at most {self.limits.max_upload_pixels:,} pixels"
            )
        h, w = image.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        crop = Image.fromarray(image[top : top + side, left : left + side, :3].astype(np.uint8))
        small = np.array(crop.convert("RGB").resize((run.resolution,) * 2, Image.BICUBIC))  # (H, W, 3)
        x = torch.from_numpy(small).permute(2, 0, 1)[None].float().div(127.5).sub(1)  # (1, 3, H, W) in [-1, 1]
        tok = run.pipe.tokenizer
        with torch.no_grad():
            tokens = tok.encode(x.to(run.device))
            recon = tok.decode(tokens if keep is None else tokens[:, :keep]).clamp(-1, 1).cpu()
        rec = to_uint8(recon)[0].permute(1, 2, 0).numpy()  # (H, W, 3)
        mse = float(np.mean((rec.astype(np.float64) - small.astype(np.float64)) ** 2))
        psnr = math.inf if mse == 0 else 10 * math.log10(255**2 / mse)
        summary = token_summary(run, keep)
        return small, rec, f"{summary} · PSNR **{psnr:.2f} dB**" + (" (exact)" if math.isinf(psnr) else "")


def max_prefix(run: Run) -> int:
    """N, the longest prefix a variable-length 1-D tokenizer decodes; 0 for every other tokenizer."""
    spec = run.pipe.tokenizer.token_spec
    return spec.shape[0] if spec.variable_length and len(spec.shape) == 1 else 0


def prefix_length(run: Run, num_tokens) -> int | None:
    """The checked token count for a variable-length tokenizer (None: all N, or a tokenizer without prefixes)."""
    N = max_prefix(run)
    if not N or num_tokens is None:
        return None
    return _number(num_tokens, "token count", 1, N, integer=True)


# ----------------------------------------------------------------------------- text about a run


def token_summary(run: Run, keep: int | None = None) -> str:
    """The report's token count: all N of them, or the first k of N for a decoded prefix."""
    spec = run.pipe.tokenizer.token_spec
    n = spec.num_positions * spec.depth
    return f"**{n if keep is None else f'first {keep} of {n}'} tokens** ({spec.describe()})"


def reconstruct_note(run: Run) -> str:
    tok = run.pipe.cfg.tokenizer
    if not getattr(run.pipe.tokenizer, "trainable", True) and tok.name == "pixels":
        return (f"`{run.name}` uses the `pixels` tokenizer, the identity (with patching and scaling): "
                "the reconstruction is exact and the PSNR infinite. A run with a trained tokenizer shows its real "
                "reconstruction error here.")  # fmt: skip
    return (
        f"`{run.name}` uses the `{tok.name}` tokenizer; the upload is center-cropped and resized to {run.resolution}²."
    )


def latest_metrics(run: Run) -> dict[str, tuple[float, int]]:
    """The newest value of every metric in the run's ``metrics.jsonl``, with the step it was logged at."""
    latest: dict[str, tuple[float, int]] = {}
    for event in RunFolder(run.path).read_metrics():  # a line being written while we read is skipped
        step = event.get("step", -1)
        for key, value in event.items():
            if key not in ("step", "time") and isinstance(value, (int, float)) and not isinstance(value, bool):
                latest[key] = (value, step)
    return latest


def model_card(run: Run) -> str:
    cfg, pipe = run.pipe.cfg, run.pipe
    params = pipe.param_counts()
    metrics = latest_metrics(run)
    logged = max((s for _, s in metrics.values()), default=None)
    lines = [
        f"### {run.name}",
        f"- **preset**: `{cfg.preset or '(custom)'}` · **run**: `{run.path}` · **device**: {run.device}",
        f"- **data**: `{cfg.data.name}` at {run.resolution}×{run.resolution}, {len(pipe.class_names)} classes: "
        + ", ".join(pipe.class_names),
        f"- **tokenizer**: `{cfg.tokenizer.name}` ({params['tokenizer']:,} parameters) · {token_summary(run)}",
        f"- **generator**: `{cfg.generator.name}` ({params['generator']:,} parameters, {params['generator'] / 1e6:.2f}M)"
        + (f" · **objective**: `{cfg.objective.name}`" if cfg.objective is not None else ""),
        f"- **training**: {cfg.train.steps:,} steps configured"
        + (f", last logged step {logged:,}" if logged is not None else "")
        + f", batch {cfg.train.batch_size}, lr {cfg.train.lr:g}, EMA {cfg.train.ema_decay:g}",
        "- **sampling defaults**: " + ", ".join(f"{k} `{v}`" for k, v in to_dict(cfg.sample.options).items()),
        "",
        "#### Latest metrics (`metrics.jsonl`)",
    ]
    if metrics:
        lines += ["| metric | value | step |", "|---|---|---|"]
        lines += [f"| {k} | {v:.6g} | {s} |" for k, (v, s) in metrics.items()]
    else:
        lines.append("(none logged)")
    return "\n".join(lines)


def config_yaml(run: Run) -> str:
    return yaml.safe_dump(run.pipe.cfg.to_dict(), sort_keys=False)


# ----------------------------------------------------------------------------- the page


def _gradio():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio as gr
    except ImportError:
        raise DemoError("the demo needs gradio: pip install 'genlab[demo]'") from None
    return gr


CSS = ".pixelated img { image-rendering: pixelated; }"
SYSTEM_FONTS = ("ui-sans-serif", "system-ui", "sans-serif")  # no web fonts: the page works offline


def build_app(runs: list[Run], limits: Limits = Limits()):
    """The Blocks app over loaded runs; the generation endpoint is ``api_name="generate"``."""
    gr = _gradio()
    demo = Demo(runs, limits)
    first = runs[0]

    def defaults(run: Run):
        o = run.pipe.cfg.sample.options
        sampler = getattr(o, "sampler", None)
        return dict(
            sampler=sampler if sampler in demo.samplers else demo.samplers[0],
            steps=min(getattr(o, "steps", 8), limits.max_steps),
            guidance=min(getattr(o, "cfg", 1.0), limits.max_guidance),
            gamma=float(getattr(o, "gamma", 0.0)),
        )

    d = defaults(first)
    with gr.Blocks(title="genlab demo", delete_cache=(3600, 3600)) as app:
        app._genlab = demo  # tests reach the handlers through the app
        gr.Markdown("# genlab demo\nClass-conditional image generation from trained genlab runs.")
        model = gr.Dropdown(list(demo.runs), value=first.name, label="Model", info="one of the runs this demo serves")
        with gr.Tabs():
            with gr.Tab("Generate"):
                with gr.Row():
                    with gr.Column(scale=1):
                        classes = gr.Dropdown(
                            first.pipe.class_names, value=[first.pipe.class_names[0]], multiselect=True,
                            filterable=True, allow_custom_value=True, label="Classes",
                            info="type to search; several at once", elem_id="classes",
                        )  # fmt: skip
                        n = gr.Slider(1, limits.max_images, value=min(4, limits.max_images), step=1,
                                      label=f"Images per class (1–{limits.max_images}; at most {limits.max_images} in all)")  # fmt: skip
                        sampler = gr.Dropdown(demo.samplers, value=d["sampler"], label="Sampler",
                                              visible=first.has_sampler)  # fmt: skip
                        steps = gr.Slider(1, limits.max_steps, value=d["steps"], step=1,
                                          label=f"Steps (1–{limits.max_steps})")  # fmt: skip
                        guidance = gr.Slider(0, limits.max_guidance, value=d["guidance"], step=0.1,
                                             label=f"Guidance scale (0–{limits.max_guidance:g}; 1 = none)")  # fmt: skip
                        gamma = gr.Slider(0, 1, value=d["gamma"], step=0.05, label=first.gamma_label() or "γ",
                                          visible=first.takes_gamma)  # fmt: skip
                        with gr.Group(visible=first.supports_interval) as interval_row:
                            lo = gr.Slider(0, 1, value=0, step=0.01, label="Guidance interval: from t (0–1)")
                            hi = gr.Slider(
                                0, 1, value=1, step=0.01, label="Guidance interval: to t (0–1; t = 1 is noise)"
                            )
                        with gr.Row():
                            seed = gr.Number(0, precision=0, minimum=0, maximum=MAX_SEED,
                                             label=f"Seed (0–{MAX_SEED}; image i uses seed + i)", scale=3)  # fmt: skip
                            dice = gr.Button("Random seed", scale=1)
                        go = gr.Button("Generate", variant="primary", elem_id="generate")
                    with gr.Column(scale=2):
                        gallery = gr.Gallery(label="Samples", columns=4, format="png", object_fit="contain",
                                             height="auto", elem_id="gallery", elem_classes=["pixelated"])  # fmt: skip
                        info = gr.Markdown(elem_id="info", label="timing")
                        with gr.Row():
                            grid_file = gr.DownloadButton("Download grid (PNG)", value=None)
                            cmd_file = gr.DownloadButton("Download command", value=None)
                        command = gr.Code(label="Reproduce with genlab sample", language="shell", lines=2,
                                          interactive=False, wrap_lines=True)  # fmt: skip
            with gr.Tab("Reconstruct"):
                recon_note = gr.Markdown(reconstruct_note(first))
                with gr.Row():
                    # a File, not an Image: Gradio's Image input decodes every upload (a non-image or a
                    # decompression bomb is a console traceback); Demo.reconstruct reads the header first
                    upload = gr.File(label=f"Upload an image (center-cropped, resized to the run's resolution; "
                                     f"≤ {limits.max_upload_size})", type="filepath", file_count="single")  # fmt: skip
                    seen = gr.Image(label="Input at the run's resolution", interactive=False, format="png",
                                    elem_classes=["pixelated"])  # fmt: skip
                    recon = gr.Image(label="Reconstruction", interactive=False, format="png",
                                     elem_classes=["pixelated"])  # fmt: skip
                n_first = max_prefix(first)
                recon_tokens = gr.Slider(1, max(n_first, 2), value=max(n_first, 1), step=1, visible=bool(n_first),
                                         label=token_slider_label(n_first))  # fmt: skip
                recon_go = gr.Button("Encode and decode", variant="primary")
                recon_info = gr.Markdown(label="report")
            with gr.Tab("About"):
                card = gr.Markdown(model_card(first))
                config = gr.Code(config_yaml(first), language="yaml", label="config.yaml", interactive=False)

        def on_model(name):
            run = demo.run(name)
            dd = defaults(run)
            names = run.pipe.class_names
            return (gr.update(choices=names, value=[names[0]]), gr.update(value=dd["sampler"], visible=run.has_sampler),
                    gr.update(value=dd["steps"]), gr.update(value=dd["guidance"]),
                    gamma_slider(gr, run, dd["gamma"]),
                    gr.update(visible=run.supports_interval), reconstruct_note(run), token_slider(gr, run),
                    model_card(run), config_yaml(run))  # fmt: skip

        model.change(on_model, model,
                     [classes, sampler, steps, guidance, gamma, interval_row, recon_note, recon_tokens, card, config],
                     queue=False, api_visibility="private")  # fmt: skip
        dice.click(lambda: random.randint(0, MAX_SEED), None, seed, queue=False, api_visibility="private")
        go.click(
            demo.generate, [model, classes, n, sampler, steps, guidance, seed, lo, hi, gamma],
            [gallery, info, grid_file, cmd_file, command], api_name="generate",
            preprocess=False,  # every input is checked in Demo.generate, with the app's own messages
            concurrency_id="model", concurrency_limit=1,
        )  # fmt: skip
        recon_go.click(demo.reconstruct, [model, upload, recon_tokens], [seen, recon, recon_info],
                       api_name="reconstruct", concurrency_id="model", concurrency_limit=1)  # fmt: skip
    app.queue(max_size=32, default_concurrency_limit=1)
    return app


def gamma_slider(gr, run: Run, value: float):
    """The γ slider for ``run``: shown, with the option's help as its label, for a run whose sampling takes γ."""
    if not run.takes_gamma:
        return gr.update(visible=False)
    return gr.update(value=value, visible=True, label=run.gamma_label())


def token_slider_label(N: int) -> str:
    return f"Tokens to decode (1–{N}: the first k of the 1-D sequence, coarse to fine)"


def token_slider(gr, run: Run):
    """The Reconstruct tab's token-count slider for ``run``: shown, up to N, for a variable-length tokenizer."""
    N = max_prefix(run)
    if not N:
        return gr.update(visible=False)
    return gr.update(minimum=1, maximum=N, value=N, visible=True, label=token_slider_label(N))


def launch_kwargs(limits: Limits = Limits()) -> dict:
    """What ``launch`` needs beyond host and port: no sharing, no extra paths, offline theme."""
    gr = _gradio()
    return dict(
        share=False, allowed_paths=[], max_file_size=limits.max_upload_size, ssr_mode=False, show_error=True,
        css=CSS, theme=gr.themes.Default(font=SYSTEM_FONTS, font_mono=("ui-monospace", "monospace")),
    )  # fmt: skip


def serve(run_dirs: list[str], *, host: str = "127.0.0.1", port: int = 7860, device: str | None = None,
          limits: Limits = Limits()) -> None:  # fmt: skip
    """Load the runs (failing early and clearly), then serve the app until interrupted."""
    _gradio()
    runs = load_runs(run_dirs, device=device, limits=limits)
    app = build_app(runs, limits)
    names = ", ".join(r.name for r in runs)
    print(f"genlab demo: loaded {names} on {runs[0].device}; starting http://{host}:{port}", flush=True)
    _stop_on_sigterm()
    try:
        app.launch(server_name=host, server_port=port, **launch_kwargs(limits))
    except OSError as e:
        raise DemoError(f"cannot listen on {host}:{port}, choose another --port ({e})") from None


__all__ = ["Demo", "DemoError", "Limits", "Run", "RunError", "build_app", "load_runs", "serve"]
