"""The zoo's table (markdown), JSON and plot (FID against sampling cost), from its rows' saved results."""

from __future__ import annotations

import json
from pathlib import Path


def _m(count) -> str:
    return "-" if count is None else f"{count / 1e6:.2f}M"


def _s(seconds) -> str:
    return "-" if seconds is None else f"{seconds:.0f}"


def table(rows: list[dict], tokenizers: dict, meta: dict) -> str:
    """One markdown line per sampling point; the budget, machine and floor in the header."""
    b = meta["budget"]
    floors = ", ".join(f"{k}: {v:.1f}" if v is not None else f"{k}: n covers the set" for k, v in meta["floor"].items())
    head = [
        f"Budget: every generator {b['steps']} optimizer steps x batch {b['batch']}; tokenizers: "
        + ("each preset's own steps" if b["tokenizer_steps"] is None else f"{b['tokenizer_steps']} steps each")
        + f". FID of n = {b['n']} samples ({b.get('precision', 'fp32')} sampling) against the training images; real-vs-real floor at that n: {floors or '-'}.",
        f"Machine: {meta['machine']}; 1-minute load average during each row's training in its train-s cell ({meta['load_end']} when the table was written). {meta.get('command', '')}".rstrip(),
        "",
        "| family | tokenizer (params, train s) | generator params | train s (load) | sampling | NFE | FID | ms/image | GFLOPs/image |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines = []
    for row in rows:
        train, points = row.get("train") or {}, row.get("points") or {}
        tok = tokenizers.get(row.get("train", {}).get("tokenizer") or "", {})
        params = row.get("parameters", {})
        if train.get("tokenizer"):
            tok_cell = f"{train['tokenizer']} ({_m(tok.get('parameters'))}, {_s(tok.get('train_seconds'))})"
        else:  # the preset's own: pixels, or an inline (untrained) tokenizer
            own = row.get("tokenizer_name", "own")
            tok_cell = own if not params.get("tokenizer") else f"{own} ({_m(params['tokenizer'])}, inline)"
        first = True
        for label, p in points.items() or [("not measured", {})]:
            fixed = f", {train['threads']} thread(s)" if train.get("threads") else ""  # OMP_NUM_THREADS, when set
            trained = _s(train.get("train_seconds")) + (
                f" (load {train['load'].split()[0]}{fixed})" if train.get("load") else ""
            )
            cells = [row["family"], tok_cell, _m(params.get("generator")), trained] if first else [""] * 4
            cells += [label, str(p.get("nfe", "-")), f"{p['fid']:.1f}" if "fid" in p else "-",
                      f"{p['ms_per_image']:.1f}" if "ms_per_image" in p else "-",
                      f"{p['gflops_per_image']:.3g}" if "gflops_per_image" in p else "-"]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
            first = False
    return "\n".join(head + lines) + "\n"


def plot(rows: list[dict], meta: dict, path: Path) -> str:
    """FID against counted GFLOPs/image and against ms/image, one labelled point per family and sampling point."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return "plot skipped: matplotlib is not installed (pip install matplotlib)"
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    for ax, key, xlabel in ((axes[0], "gflops_per_image", "counted GFLOPs / image"),
                            (axes[1], "ms_per_image", "sampling ms / image (this machine)")):  # fmt: skip
        for row in rows:
            pts = [(p[key], p["fid"], label) for label, p in (row.get("points") or {}).items() if key in p]
            if not pts:
                continue
            xs, ys, labels = zip(*pts)
            line = ax.plot(xs, ys, marker="o", linestyle="-" if len(pts) > 1 else "none", label=row["family"])[0]
            for x, y, label in pts:
                text = row["name"] if len(pts) == 1 else f"{row['name']} {label}"
                ax.annotate(text, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points", color=line.get_color())
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # decades only: no overlapping labels
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
    for v in meta["floor"].values():
        if v is not None:
            for ax in axes:
                ax.axhline(v, color="grey", linestyle=":", linewidth=1)
    b = meta["budget"]
    axes[0].set_ylabel(f"FID (n = {b['n']}, vs training images)")
    axes[1].legend(fontsize=7, loc="best")
    fig.suptitle(f"genlab zoo: every generator {b['steps']} steps x batch {b['batch']} (dotted: real-vs-real floor)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plot written to {path}"


def write_report(out: Path, rows: list[dict], tokenizers: dict, meta: dict) -> dict:
    """zoo.json, zoo.md and zoo.png in ``out``; the JSON-able report (with the markdown and file paths)."""
    out.mkdir(parents=True, exist_ok=True)
    markdown = table(rows, tokenizers, meta)
    (out / "zoo.md").write_text(markdown)
    plotted = plot(rows, meta, out / "zoo.png")
    report = {**meta, "rows": rows, "tokenizers": tokenizers, "markdown": markdown,
              "files": {"table": str(out / "zoo.md"), "plot": str(out / "zoo.png"), "json": str(out / "zoo.json")},
              "plot": plotted}  # fmt: skip
    (out / "zoo.json").write_text(json.dumps({k: v for k, v in report.items() if k != "markdown"}, indent=2))
    return report
