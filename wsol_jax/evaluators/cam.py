"""Row `cam`: the CAM baseline, class activation maps of the classifier f for the true class
(`inference.cam_maps`: ReLU, bilinearly upsampled, min-max normalised), scored like g's maps
(`common.score_maps`). Only for an f with a class head on averaged features
(`methods.not_defined`)."""

from __future__ import annotations

from typing import Iterator

from wsol_jax import inference
from wsol_jax.evaluators.common import Bench, Evaluator as Base, Row, score_maps


class Evaluator(Base):
    def run(self, bench: Bench) -> Iterator[Row]:
        f_model, f_vars = bench.classifier
        cam = inference.compile_cam_maps(f_model, bench.ctx.crop)
        yield score_maps(bench, self.name, lambda b: cam(f_vars, b['image'], b['label']))
