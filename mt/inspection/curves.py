"""Training curves from a run folder's metrics.jsonl: training loss, dev loss and dev BLEU against the step.

The log is read as it is at that moment, so the curves can be drawn while training is still running: a
last line that training is writing right now (no newline yet, not valid JSON) is left for next time.
After a resume, steps logged twice keep their latest record.
"""

import json
import os

import click

from mt.errors import UserError
from mt.folders import RunFolder

FIGSIZE = (10.0, 4.0)  # inches; at plot.DPI this is the image size in pixels / 100


def read_metrics(run_dir):
    """{'train': [records], 'dev': [records]}, each sorted by step, one record per step (the latest)."""
    if not os.path.isdir(run_dir):
        raise UserError(f"{run_dir} is not a folder: pass the run folder written by `mt train`")
    path = RunFolder(run_dir).metrics_path
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise UserError(f"{run_dir} has no {os.path.basename(path)} yet: training writes its first line after "
                        "train.log_every steps") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    lines = raw.split(b"\n")
    by_kind, broken = {"train": {}, "dev": {}}, 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            if number < len(lines):  # the unfinished last line is expected; anything else is not
                broken += 1
            continue
        if isinstance(record, dict) and record.get("kind") in by_kind and isinstance(record.get("step"), int):
            by_kind[record["kind"]][record["step"]] = record
    if broken:
        click.echo(f"warning: {path}: {broken} unreadable line(s) skipped", err=True)
    return {kind: [records[step] for step in sorted(records)] for kind, records in by_kind.items()}


def run_status(run_dir, metrics) -> str:
    """'finished at step N (reason)' or 'training, at step N' (from done.json and the last record)."""
    try:
        done = RunFolder(run_dir).done()
        return f"finished at step {done['step']} ({done['reason']})"
    except (UserError, KeyError, TypeError):
        steps = [r["step"] for kind in metrics.values() for r in kind]
        return f"in progress, at step {max(steps)}" if steps else "in progress"


def best_dev(dev):
    """The dev record marked best most recently (the weights kept in weights/best), or None."""
    marked = [r for r in dev if r.get("best")]
    return marked[-1] if marked else None


def series(records, key):
    """(steps, values) of the records that have a number under `key`."""
    points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return [p[0] for p in points], [p[1] for p in points]


def draw(metrics, title, path):
    """Two panels, loss (train and dev) and dev BLEU, against the step; saved to `path`."""
    from mt.inspection import plot

    plt = plot.pyplot()
    fig, (ax_loss, ax_bleu) = plt.subplots(1, 2, figsize=FIGSIZE, dpi=plot.DPI)
    train_steps, train_loss = series(metrics["train"], "loss")
    dev_steps, dev_loss = series(metrics["dev"], "loss")
    bleu_steps, bleu = series(metrics["dev"], "bleu")
    best = best_dev(metrics["dev"])
    if train_steps:
        ax_loss.plot(train_steps, train_loss, color="#3b75af", linewidth=1.4, label="train loss")
    if dev_steps:
        ax_loss.plot(dev_steps, dev_loss, "o-", color="#e1812c", linewidth=1.4, markersize=4, label="dev loss")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss (nats per target piece)")
    ax_loss.set_title("loss")
    if train_steps or dev_steps:
        ax_loss.legend(loc="upper right", frameon=False)
    if bleu_steps:
        ax_bleu.plot(bleu_steps, bleu, "o-", color="#3a923a", linewidth=1.4, markersize=4, label="dev BLEU")
        if best is not None and isinstance(best.get("bleu"), (int, float)):
            ax_bleu.plot([best["step"]], [best["bleu"]], marker="*", color="#c03d3e", markersize=14,
                         linestyle="none", label=f"best: {best['bleu']:.2f} at step {best['step']}")
        ax_bleu.legend(loc="lower right", frameon=False)
    else:
        ax_bleu.text(0.5, 0.5, "no dev BLEU logged yet", ha="center", va="center", color="#777",
                     transform=ax_bleu.transAxes)
    ax_bleu.set_xlabel("step")
    ax_bleu.set_ylabel("BLEU")
    ax_bleu.set_title("dev BLEU")
    for ax in (ax_loss, ax_bleu):
        ax.grid(True, color="#e6e6e6", linewidth=0.8)
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    plot.save(fig, path)


def format_table(metrics) -> str:
    """One row per validation (train loss: the last logged at or before it), then the latest training line."""
    rows = [f"{'step':>8}  {'train loss':>10}  {'dev loss':>8}  {'dev BLEU':>8}"]
    train = metrics["train"]

    def train_loss_at(step):
        before = [r for r in train if r["step"] <= step and isinstance(r.get("loss"), (int, float))]
        return f"{before[-1]['loss']:10.3f}" if before else f"{'':>10}"

    for record in metrics["dev"]:
        bleu = f"{record['bleu']:8.2f}" if isinstance(record.get("bleu"), (int, float)) else f"{'':>8}"
        mark = "  best" if record is best_dev(metrics["dev"]) else ""
        rows.append(f"{record['step']:>8}  {train_loss_at(record['step'])}  {record['loss']:8.3f}  {bleu}{mark}")
    last_dev = metrics["dev"][-1]["step"] if metrics["dev"] else -1
    if train and train[-1]["step"] > last_dev:
        rows.append(f"{train[-1]['step']:>8}  {train_loss_at(train[-1]['step'])}")
    return "\n".join(rows)


def run(model, out):
    """`mt inspect curves`: draw the run's curves to OUT (.png, .svg, .pdf), or print them as a table."""
    metrics = read_metrics(model)
    if not metrics["train"] and not metrics["dev"]:
        raise UserError(f"{RunFolder(model).metrics_path} holds no training or dev record yet")
    status = run_status(model, metrics)
    name = os.path.normpath(model)
    if out is None:
        click.echo(f"run {model}: {status}")
        click.echo(format_table(metrics))
        return metrics
    from mt.inspection import plot

    plot.output_kind(out, plot.IMAGE_FORMATS)
    draw(metrics, f"{name}: {status}", out)
    click.echo(f"curves of {len(metrics['train'])} training and {len(metrics['dev'])} dev records -> {out}",
               err=True)
    return metrics
