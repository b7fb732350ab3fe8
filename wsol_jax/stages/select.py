"""Stage select: the point of `g` to keep, by the rule of `wsol_jax.selection` (which holds the
rule, as a pure function of g's history, and `load_selection`, the reader of `selection.json`
that evaluate, export and predict use), written to `selection.json`."""

from __future__ import annotations

from wsol_jax import parallel, workdir as workdir_lib
from wsol_jax.errors import TrainingError, WorkdirError
from wsol_jax.selection import bad_map_share, select_step, selection_regret
from wsol_jax.data.dataset import steps_per_epoch
from wsol_jax.train import budgets, checkpoint, loop


def run(ctx) -> dict:
    """The latest scored point of `g` whose mean S (Eq. 6) is within
    `eval.selection_se` standard errors of the highest; no box or mask is used.
    `ctx` is a `wsol_jax.context.Context`."""
    cfg = ctx.config
    spec = budgets.g_loop(cfg, ctx.workdir, steps_per_epoch(len(ctx.data.train), cfg.g.batch_size))
    latest = checkpoint.latest_step(spec.directory)
    history = loop.read_history(spec.history_path, latest or 0)
    if not history:
        raise WorkdirError(f'no trained g in {spec.directory}; run --stage=train_g first')
    stopped = loop.finished(spec, history, latest)
    if stopped is None:
        raise WorkdirError(
            f'g in {spec.directory} is at epoch {latest / spec.steps_per_epoch:.2f} and not finished '
            f'under this config (g.max_epochs={cfg.g.max_epochs}, g.patience={cfg.g.patience}); '
            'run --stage=train_g first'
        )
    k = cfg.eval.selection_se
    chosen = select_step(history, standard_errors=k)
    per_epoch = spec.steps_per_epoch
    selection = {
        'selected_step': chosen,
        'last_step': latest,
        'steps_per_epoch': per_epoch,
        'selected_epoch': chosen / per_epoch,
        'last_epoch': latest / per_epoch,
        'stopped': stopped,
        'criterion': 'mean containment score S (Eq. 6) on the validation split: the latest scored point '
        f'within {k:g} standard error(s) of the highest; degenerate maps '
        f'(box > {cfg.eval.max_coverage:g} of the image, or nothing kept) score 0',
        'box_rule': cfg.eval.box_rule,
        'regret': selection_regret(history, chosen),
        'history': {str(s): history[s] for s in sorted(history)},
    }
    if parallel.is_chief():
        workdir_lib.write_json(ctx.path(workdir_lib.SELECTION), selection)
    parallel.barrier('selection')
    print(
        f'[select] step {chosen} (epoch {chosen / per_epoch:.2f}, mean S {history[chosen]["mean_S"]:.4f}) of '
        f'{len(history)} scored points; g stopped at epoch {latest / per_epoch:.2f} ({stopped})'
    )
    return selection


def check_selected_maps(selection: dict, max_bad: float) -> None:
    """Stop when the kept point's maps do not localise: degenerate (one blob over nearly the whole
    image, or empty) plus collapsed maps on more than `max_bad` of the validation images. Their
    boxes are the whole image or nothing, so GT-known, Top-1 loc and the rest would measure
    the objects' sizes, not g (a run whose g collapsed once ended with GT-known 0.8 % and exit 0)."""
    step = selection['selected_step']
    chosen = selection['history'].get(str(step), {})
    bad = bad_map_share(chosen)
    if bad > max_bad:
        raise TrainingError(
            f'g does not localise: at the selected step {step} (epoch {selection["selected_epoch"]:.2f} of '
            f'{selection["last_epoch"]:.2f}), {100 * bad:.0f}% of the '
            f'validation maps are degenerate or collapsed (limit eval.max_bad_maps={max_bad:g}); the report is written '
            f'but its numbers do not measure localisation. Train g longer or at another rate '
            f'(g.max_epochs, g.patience, '
            f'g.optimizer.learning_rate), check f (f_quality.json), or accept with --config.eval.max_bad_maps=1'
        )
