"""Results a person can read and look at: results.json, results.md and PNG figures.

* `selection.png`: mean S and validation GT-known loc at every scored point, the selected one marked (the
  paper's early-stopping story in one figure);
* `overlays.png`: test images with the selected map, GT box (green) and predicted box (red),
  beside the CAM baseline where f defines it (Fig. 5);
* `strip.png`: the maps of a few validation images across the scored points (Fig. 4).
"""

from __future__ import annotations

import functools
import glob
import importlib.metadata
import json
import os
import re
import subprocess

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from wsol_jax import evaluators, methods, workdir as workdir_lib  # noqa: E402
from wsol_jax.data.dataset import crop_offset  # noqa: E402
from wsol_jax.boxes import BOX_RULE_DESCRIPTIONS  # noqa: E402

METRIC_NAMES = {
    'gt_known_loc': 'GT-known loc',
    'top1_loc': 'Top-1 loc',
    'top1_cls': 'Top-1 cls',
    'top5_loc': 'Top-5 loc',
    'top5_cls': 'Top-5 cls',
    'pxap': 'PxAP',
    'maxboxacc_v1': 'MaxBoxAcc',
    'maxboxacc_v2': 'MaxBoxAccV2',
}


def protocol(config) -> list[str]:
    """How every number of the table was obtained, so that nobody has to guess (the lines of what
    this run's f does not define, `methods.not_defined`, are left out with it)."""
    e, d = config.eval, config.data
    absent = methods.not_defined(config)
    top_k = 'top_k' not in absent
    crop = (
        f'images resized to {d.image_size}x{d.image_size}, centre crop {d.crop_size}'
        if d.crop_size < d.image_size
        else f'whole image resized to {d.crop_size}x{d.crop_size} (no crop)'
    )
    grid = (
        f'the best of the thresholds 0, {e.pxap_interval:g}, ..., {1 - e.pxap_interval:g} of the min-max normalised map'
    )
    return [
        '',
        '## How each number was obtained',
        '',
        '- Split: the test split; the point of g was selected on the validation split by mean S alone '
        '(no box, no label).',
        f'- Crop protocol (all rows except the wsolevaluation one): {crop}; the ground truth scaled once from the '
        f'original image\'s pixels (boxes round(x * {d.image_size} / W), shifted by the crop and clipped to it; masks '
        'resized by nearest neighbours).',
        f'- GT-known loc{f", Top-1/Top-{e.top_k} loc" if top_k else ""} (the paper\'s protocol): one box per image, '
        f'box rule "{e.box_rule}": {BOX_RULE_DESCRIPTIONS[e.box_rule]} at ratio {e.threshold_ratio:g}; largest OpenCV '
        f'contour; correct at IoU >= 0.5 with a ground-truth box (areas +1 px, as wsolevaluation).'
        + (
            f' Top-1 loc also needs f\'s top-1 class right, Top-{e.top_k} loc the true class among f\'s top {e.top_k}.'
            if top_k
            else ''
        )
        + ' The point of g was selected by S under the same rule.',
        *([f'- Top-1 / Top-{e.top_k} cls: the classifier f on the same crop.'] if top_k else []),
        f'- MaxBoxAcc (v1, wsolevaluation): largest contour\'s box, IoU 0.5, at {grid}.',
        f'- MaxBoxAccV2: every contour\'s box a candidate, mean over IoU {", ".join(map(str, e.maxboxacc_ious))}, '
        f'each at {grid}.',
        f'- PxAP (where masks exist): area under the pixel precision-recall curve, over the thresholds 0, '
        f'{e.pxap_interval:g}, ..., {1 - e.pxap_interval:g} of the min-max normalised map.',
        # each evaluator's own protocol, for every one this run's f defines
        *(e.protocol for e in evaluators.EVALUATORS.values() if e.protocol and e.needs not in absent),
        '- Numbers are percentages of the test images.',
    ]


PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy', 'opencv-python-headless', 'ml-collections')


def provenance() -> dict:
    """Library versions and the git commit of the code, for reproducing any number."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        commit = (
            subprocess.run(
                ['git', 'rev-parse', 'HEAD'], cwd=here, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
        dirty = bool(
            subprocess.run(
                ['git', 'status', '--porcelain'], cwd=here, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {'versions': versions, 'git_commit': commit, 'git_dirty': dirty}


def markdown_table(results: dict, selection: dict, not_defined: dict[str, str] | None = None) -> str:
    """The table of `results` (`{row: metrics}`, each row named by `evaluators.title`), then one
    line for each row or column that is absent because f does not define it (`not_defined`:
    `methods.not_defined`), and why."""
    cols = [k for k in METRIC_NAMES if any(k in r for r in results.values())]
    lines = [
        f'Selected: step {selection["selected_step"]} (epoch {selection["selected_epoch"]:.2f}); g stopped at epoch '
        f'{selection["last_epoch"]:.2f} ({selection.get("stopped")}) '
        f'({selection["criterion"]}; box rule: {selection.get("box_rule", "literal")}). Metrics in %.',
        '',
        '| method | ' + ' | '.join(METRIC_NAMES[c] for c in cols) + ' |',
        '|---|' + '---|' * len(cols),
    ]
    for name, r in results.items():
        cells = [f'{100 * r[c]:.2f}' if c in r else '-' for c in cols]
        lines.append(f'| {evaluators.title(name)} | ' + ' | '.join(cells) + ' |')
    absent = [f'- {methods.NOT_DEFINED_NAMES[k]}: not defined, {why}.' for k, why in (not_defined or {}).items()]
    return '\n'.join(lines + (['', 'Not in the table:', *absent] if absent else []) + diagnostics(selection)) + '\n'


def diagnostics(selection: dict) -> list[str]:
    """What the selection did not use but a reader should know: the regret against the best
    point in hindsight (validation boxes), and maps that were degenerate or collapsed."""
    lines = []
    regret = selection.get('regret')
    if regret:
        lines += [
            '',
            f'Selection diagnostic (validation boxes, never used by the selection): GT-known loc of the '
            f'selected step {regret["selected_step"]} {100 * regret["selected"]:.2f}, of the best step '
            f'{regret["best_step"]} {100 * regret["best"]:.2f}; regret {100 * regret["regret"]:.2f} points.',
        ]
    chosen = selection['history'].get(str(selection['selected_step']), {})
    for key, what in (
        ('val/collapsed', 'collapsed (weights all below 0.1 or all above 0.9)'),
        ('val/degenerate', 'degenerate (one blob over nearly the whole image, or empty)'),
    ):
        if chosen.get(key, 0) > 0.05:
            lines += [
                '',
                f'**Warning**: at the selected point the weight map is {what} on '
                f'{100 * chosen[key]:.0f}% of the validation images.',
            ]
    return lines


def plot_selection(selection: dict):
    """The figure of mean S (with its standard errors) and validation GT-known loc at every scored
    point of g, against its epoch."""
    hist = [selection['history'][str(s)] for s in sorted(int(s) for s in selection['history'])]
    epochs = [h['epoch'] for h in hist]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    # the error bars are the standard errors that set the selection's tolerance (selection.select_step)
    ax.errorbar(
        epochs,
        [h['mean_S'] for h in hist],
        yerr=[h.get('mean_S_se', 0.0) for h in hist],
        fmt='o-',
        capsize=3,
        label='mean S +- standard error (validation, Eq. 6)',
    )
    if all('val/gt_known_loc' in h for h in hist):
        ax.plot(epochs, [h['val/gt_known_loc'] for h in hist], 's--', label='GT-known loc (validation)')
    ax.axvline(selection['selected_epoch'], color='k', ls=':', label='selected point')
    ax.set_xlabel('epoch of g')
    ax.set_ylim(0, 1.02)
    ax.legend(loc='lower left', fontsize=8)
    ax.set_title('Early stopping by the containment score S')
    fig.tight_layout()
    return fig


def _png(make_figure, dpi: int):
    """A writer of the figure `make_figure()` as PNG (the figure is made and rendered when the
    writer runs, then closed)."""

    def write(fh) -> None:
        fig = make_figure()
        try:
            fig.savefig(fh, format='png', dpi=dpi)
        finally:
            plt.close(fig)

    return write


def _center(images_uint8: np.ndarray, crop_size: int) -> np.ndarray:
    o = crop_offset(images_uint8.shape[1], crop_size)
    return images_uint8[:, o : o + crop_size, o : o + crop_size]


def _draw_box(ax, box, color):
    x0, y0, x1, y1 = box
    ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec=color, lw=1.5))


def plot_overlays(images_uint8: np.ndarray, samples, crop_size: int):
    """The figure of Fig. 5: rows: test images; columns: the image with the box of the first row
    drawn (g at the selected point), then the map (+ its box) of each row in `samples` that has an
    overlay title (`evaluators.Entry.overlay`), in the order evaluated: g selected, g last, CAM
    where f defines it."""
    images = _center(images_uint8, crop_size)
    n = len(samples.indices)
    shown = [v for v in samples.maps if v in evaluators.EVALUATORS and evaluators.EVALUATORS[v].overlay]
    cols = 1 + len(shown)
    fig, axes = plt.subplots(n, cols, figsize=(2 * cols, 2 * n), squeeze=False)
    for row in range(n):
        gt = samples.gt_boxes[row]
        panels = [('image', None, samples.boxes[shown[0]][row])] + [
            (evaluators.EVALUATORS[v].overlay, samples.maps[v][row], samples.boxes[v][row]) for v in shown
        ]
        for col, (title, m, box) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(images[row])
            if m is not None:
                ax.imshow(m, cmap='jet', alpha=0.5, vmin=0, vmax=1)
            for g in gt[gt[:, 0] >= 0]:
                _draw_box(ax, g, 'lime')
            _draw_box(ax, box, 'red')
            ax.set_axis_off()
            if row == 0:
                ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def strip_files(strip_dir: str) -> list[tuple[int, str]]:
    """`[(step, path)]` of the saved strip maps (`strip/step_XXXXXXX.npy`), by step."""
    return sorted(
        (int(m.group(1)), f)
        for f in glob.glob(os.path.join(strip_dir, 'step_*.npy'))
        if (m := re.fullmatch(r'step_(\d+)\.npy', os.path.basename(f)))
    )


def plot_strip(
    numbered: list[tuple[int, str]],
    images_uint8: np.ndarray,
    crop_size: int,
    selected: int,
    steps_per_epoch: int = 1,
    max_columns: int = 12,
):
    """Fig. 4: maps of the same validation images over the scored steps of g (`numbered`:
    `strip_files`, not empty; `selected`: a step; columns are titled by epoch)."""
    steps, files = zip(*numbered)
    steps, files = list(steps), list(files)
    pick = np.unique(np.linspace(0, len(files) - 1, min(max_columns, len(files))).round().astype(int))
    if selected in steps and steps.index(selected) not in pick:
        pick = np.sort(np.append(pick, steps.index(selected)))
    maps = [np.load(files[i]) for i in pick]
    n = min(len(maps[0]), len(images_uint8))
    images = _center(images_uint8[:n], crop_size)
    fig, axes = plt.subplots(n, len(pick) + 1, figsize=(1.4 * (len(pick) + 1), 1.4 * n), squeeze=False)
    for r in range(n):
        axes[r, 0].imshow(images[r])
        for c, (i, m) in enumerate(zip(pick, maps)):
            axes[r, c + 1].imshow(m[r], cmap='gray', vmin=0, vmax=255)
            if r == 0:
                star = ' *' if steps[i] == selected else ''
                axes[r, c + 1].set_title(f'ep {steps[i] / steps_per_epoch:.3g}{star}', fontsize=8)
        for ax in axes[r]:
            ax.set_axis_off()
    fig.tight_layout()
    return fig


def write(workdir: str, config, results: dict, selection: dict, samples, data, timings: dict) -> None:
    """results.json, results.md, selection.png, overlays.png and strip.png as one unit: all are
    rendered first, then put in place together (`workdir.write_together`), so that an interrupted
    evaluation leaves the old report whole, never half of each."""
    not_defined = methods.not_defined(config)
    record = {
        'method': config.method,
        'seed': config.seed,
        'results': results,
        'not_defined': not_defined,  # {'top_k' | 'cam': why}: rows and keys left out of `results`
        'selected_step': selection['selected_step'],
        'selected_epoch': selection['selected_epoch'],
        'last_step': selection['last_step'],
        'last_epoch': selection['last_epoch'],
        'g_stopped': selection.get('stopped'),
        'box_rule': selection.get('box_rule'),
        'selection_regret': selection.get('regret'),
        'history': selection['history'],
        'timings_s': timings.get('total_s', timings),
        'f_quality': workdir_lib.read_json(workdir_lib.path(workdir, workdir_lib.F_QUALITY)),
        'config': config.to_dict(),
        **provenance(),
    }
    markdown = (
        f'# wsol-jax results: {config.method}\n\n'
        + markdown_table(results, selection, not_defined)
        + '\n'.join(protocol(config))
        + '\n'
    )
    path = functools.partial(os.path.join, workdir)
    files = [
        (path('results.json'), lambda fh: json.dump(record, fh, indent=1, default=str), True),
        (path('results.md'), lambda fh: fh.write(markdown), True),
        (path('selection.png'), _png(lambda: plot_selection(selection), dpi=120), False),
        (
            path('overlays.png'),
            _png(lambda: plot_overlays(data.test.images[samples.indices], samples, config.data.crop_size), dpi=100),
            False,
        ),
    ]
    strips = strip_files(path(workdir_lib.STRIP))
    if strips:
        files.append(
            (
                path('strip.png'),
                _png(
                    lambda: plot_strip(
                        strips,
                        data.val.images[: config.eval.strip_images],
                        config.data.crop_size,
                        selection['selected_step'],
                        selection['steps_per_epoch'],
                    ),
                    dpi=100,
                ),
                False,
            )
        )
    workdir_lib.write_together(files, remove=[] if strips else [path('strip.png')])
