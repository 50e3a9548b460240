"""The benchmark result as fixed-width tables, each row with its speed-up over the natural baseline."""

from __future__ import annotations


def _percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.1f}%"


def _loads(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def _training_table(rows: list[dict]) -> list[str]:
    """Baseline: torchvision's eager step for ImageNet nets, our fp32 NCHW step for the CIFAR nets."""
    lines = [f"{'model':<18}{'impl':<13}{'variant':<11}{'batch':>6}{'img/s':>10}{'peak':>8}{'speed-up':>10}"]
    for r in rows:
        same = [b for b in rows if b["model"] == r["model"] and b["batch_size"] == r["batch_size"]]
        base = next((b for b in same if b["impl"] == "torchvision"), same[0])
        lines.append(
            f"{r['model']:<18}{r['impl']:<13}{r['variant']:<11}{r['batch_size']:>6}{r['images_per_s']:>10.1f}"
            f"{_percent(r['fraction_of_peak']):>8}{r['images_per_s'] / base['images_per_s']:>9.2f}x"
        )
    return lines


def _inference_table(rows: list[dict]) -> list[str]:
    """Baseline: our eager fp32 model at the same batch size; `*` marks `prepare_for_inference`'s default."""
    lines = [
        f"{'model':<18}{'impl':<19}{'prec':<6}{'batch':>6}{'img/s':>10}{'ms/batch':>10}{'peak':>8}{'speed-up':>10}"
    ]
    for r in rows:
        base = next(
            b
            for b in rows
            if b["model"] == r["model"] and b["batch_size"] == r["batch_size"] and b["impl"] == "ours-eager"
        )
        lines.append(
            f"{r['model']:<18}{r['impl'] + ('*' if r.get('default') else ''):<19}{r['precision']:<6}{r['batch_size']:>6}{r['images_per_s']:>10.1f}"
            f"{r['latency_ms']:>10.2f}{_percent(r['fraction_of_peak']):>8}"
            f"{r['images_per_s'] / base['images_per_s']:>9.2f}x"
        )
    return lines


def _run_line(result: dict) -> list[str]:
    """For a benchmarked run: which model and weights were timed, at what input (none for zoo nets)."""
    run = result["config"].get("run")
    if run is None or not result["inference"]:
        return []
    r = result["inference"][0]
    h, w = r["image_size"] if isinstance(r["image_size"], list) else (r["image_size"],) * 2
    return [f"run {run}: {r['model']} ({r['weights']}), input {r['channels']} x {h} x {w}"]


def format_report(result: dict) -> str:
    """Machine, ceilings, training and inference tables as plain text."""
    m = result["machine"]
    ceilings = ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in result["ceiling_gflops"].items())
    load = result["load_average"]
    source = result["provenance"]
    header = [
        f"commit {source['commit']}{' (uncommitted changes)' if source['dirty'] else ''}: {source['command']}",
        f"machine: {m['cpu']}, {m['cores']} cores, {m['threads']} threads, device {m['device']}"
        + (f" ({m['gpu']})" if m["gpu"] else "")
        + f", torch {m['torch']}",
        f"matmul ceiling ({result['config']['matmul_size']}^2): {ceilings}",
        f"load average (1, 5, 15 min) before: {_loads(load['before'])}, after: {_loads(load['after'])}",
        *_run_line(result),
        "",
        "training step (speed-up vs torchvision, or vs our fp32 NCHW for nets torchvision lacks)",
    ]
    return "\n".join(
        header
        + _training_table(result["training"])
        + [
            "",
            "inference (speed-up vs our eager fp32 at the same batch; * = prepare_for_inference's default)",
        ]
        + _inference_table(result["inference"])
    )
