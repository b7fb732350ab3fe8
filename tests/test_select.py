"""Stage select (wsol_jax/stages/select.py): selection.json holds the point the rule of selection.py keeps."""

import json
import math
import os


def test_selected_point_is_the_latest_within_one_standard_error_of_the_best_mean_s(method1_run):
    workdir, _ = method1_run
    selection = json.load(open(os.path.join(workdir, 'selection.json')))
    history = {int(e): h for e, h in selection['history'].items()}
    scores = {e: h['mean_S'] for e, h in history.items()}
    assert sorted(scores) == [3, 6, 9]
    best = min(e for e, s in scores.items() if s == max(scores.values()))
    n = 16  # validation images of tiny_synthetic
    for h in history.values():  # S is in [0, 1]: its standard deviation is at most 1/2
        assert 0 <= h['mean_S_se'] <= 0.5 * math.sqrt(n / (n - 1)) / math.sqrt(n)
        assert h['mean_S_se'] > 0 or h['mean_S'] in (0.0, 1.0)
    tied = [e for e, s in scores.items() if s >= scores[best] - history[best]['mean_S_se']]
    assert selection['selected_step'] == max(tied) and selection['selected_epoch'] == max(tied) / 3
    assert selection['last_step'] == 9 and selection['last_epoch'] == 3 and selection['box_rule'] == 'normalized'
    assert selection['stopped'] == 'max_epochs'
    assert '1 standard error' in selection['criterion']
