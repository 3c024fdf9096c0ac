"""Turns measurements into the Markdown table and the bytes-versus-change picture."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _num(n: float | None) -> str:
    return "n/a" if n is None else f"{n:,.0f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or not b else f"{a / b:.3g}"


def table(results: dict[str, dict[str, Any]]) -> str:
    """One row per workload: ours, naive and rsync side by side, with ratios from the same run."""
    head = (
        "| workload | change B | ours B | naive B | rsync B | ours/rsync B | round trips (frames) "
        "| writes ours/naive | ours s | ours/naive time | ours/rsync time | peak RSS MiB |\n"
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n"
    )
    rows = []
    for name, r in results.items():
        ours, naive, rsync = r["ours"], r.get("naive"), r.get("rsync")
        rows.append(
            f"| {name} | {_num(ours['bound'])} | {_num(ours['bytes'])} "
            f"| {_num(naive and naive['bytes'])} | {_num(rsync and rsync['bytes'])} "
            f"| {_ratio(ours['bytes'], rsync and rsync['bytes'])} "
            f"| {ours['round_trips']} ({ours.get('frames', ours['round_trips'])}) "
            f"| {ours['writes']}/{_num(naive and naive['writes'])} | {ours['seconds']:.3f} "
            f"| {_ratio(ours['seconds'], naive and naive['seconds'])} "
            f"| {_ratio(ours['seconds'], rsync and rsync['seconds'])} "
            f"| {ours['peak_rss_mib']:.0f} |"
        )
    return head + "\n".join(rows) + "\n"


def plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    """Bytes on the wire against the size of the change, log-log, ours beside rsync and naive."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
    styles = {"ours": ("o", "tab:green"), "rsync": ("s", "tab:blue"), "naive": ("^", "tab:red")}
    for impl, (marker, color) in styles.items():
        xs, ys = [], []
        for r in results.values():
            if r.get(impl):
                xs.append(max(r["ours"]["bound"], 1))
                ys.append(max(r[impl]["bytes"], 1))
        ax.scatter(xs, ys, marker=marker, color=color, label=impl, alpha=0.8)
    for name, r in results.items():
        ax.annotate(name, (max(r["ours"]["bound"], 1), max(r["ours"]["bytes"], 1)), fontsize=7,
                    xytext=(4, -3), textcoords="offset points")  # fmt: skip
    top = max(max(r["ours"]["bound"], 1) for r in results.values())
    ax.plot([1, top], [1, top], color="grey", linestyle=":", label="bytes = change")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("size of the change, bytes (no-op, rename and copy drawn at 1)")
    ax.set_ylabel("bytes on the wire, up + down")
    ax.set_title("merkle_sync vs rsync -z --no-whole-file vs whole-file naive")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
