"""Stage select: the epoch of `g` to keep, by the rule of `wsol_jax.selection`, written to
`selection.json`, which evaluate, export and predict read (`load_selection`)."""
from __future__ import annotations

from wsol_jax import parallel, workdir as workdir_lib
from wsol_jax.errors import TrainingError, WorkdirError
from wsol_jax.selection import select_epoch, selection_regret
from wsol_jax.train import checkpoint, loop


def select(ctx) -> dict:
    """Stage select: the latest epoch of `g` whose mean S (Eq. 6) is within
    `eval.selection_se` standard errors of the highest; no box or mask is used.
    `ctx` is a `wsol_jax.context.Context`."""
    latest = checkpoint.latest_epoch(ctx.path(workdir_lib.G))
    history = loop.read_history(ctx.path(workdir_lib.G_HISTORY), latest or 0)
    if not history:
        raise WorkdirError(f'no trained g in {ctx.path(workdir_lib.G)}; run --stage=train_g first')
    k = ctx.config.eval.selection_se
    chosen = select_epoch(history, standard_errors=k)
    selection = {'selected_epoch': chosen, 'last_epoch': max(history),
                 'criterion': 'mean containment score S (Eq. 6) on the validation split: the latest epoch within '
                              f'{k:g} standard error(s) of the highest; degenerate maps '
                              f'(box > {ctx.config.eval.max_coverage:g} of the image, or nothing kept) score 0',
                 'box_rule': ctx.config.eval.box_rule,
                 'regret': selection_regret(history, chosen),
                 'history': {str(e): history[e] for e in sorted(history)}}
    if parallel.is_chief():
        workdir_lib.write_json(ctx.path(workdir_lib.SELECTION), selection)
    parallel.barrier('selection')
    print(f'[select] epoch {chosen} (mean S {history[chosen]["mean_S"]:.4f}) of {len(history)}')
    return selection


def load_selection(workdir: str) -> dict:
    """`selection.json` of `workdir`, refused when g has trained further since it was written."""
    path = workdir_lib.path(workdir, workdir_lib.SELECTION)
    selection = workdir_lib.read_json(path)
    if selection is None or selection['last_epoch'] != checkpoint.latest_epoch(workdir_lib.path(workdir, workdir_lib.G)):
        raise WorkdirError(f'{path} is missing or older than the last epoch of g; run --stage=select first')
    return selection


def check_selected_maps(selection: dict, max_bad: float) -> None:
    """Stop when the kept epoch's maps do not localise: degenerate (one blob over nearly the whole
    image, or empty) plus collapsed maps on more than `max_bad` of the validation images. Their
    boxes are the whole image or nothing, so GT-known, Top-1 loc and the rest would measure
    the objects' sizes, not g (a run whose g collapsed once ended with GT-known 0.8 % and exit 0)."""
    epoch = selection['selected_epoch']
    chosen = selection['history'].get(str(epoch), {})
    bad = chosen.get('val/degenerate', 0.0) + chosen.get('val/collapsed', 0.0)
    if bad > max_bad:
        raise TrainingError(
            f'g does not localise: at the selected epoch {epoch} of {selection["last_epoch"]}, {100 * bad:.0f}% of the '
            f'validation maps are degenerate or collapsed (limit eval.max_bad_maps={max_bad:g}); the report is written '
            f'but its numbers do not measure localisation. Train g longer or at another rate (g.epochs, '
            f'g.optimizer.learning_rate), check f (f_quality.json), or accept with --config.eval.max_bad_maps=1')
