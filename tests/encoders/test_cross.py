"""The cross-encoder owns its join layer: `draw_join_layer` is the one place it changes per batch."""

from types import SimpleNamespace

import torch

from retrerank.encoders.cross import CrossEncoder


def cross(join_layer: int, robust_join: bool = False) -> CrossEncoder:
    return CrossEncoder(SimpleNamespace(num_layers=4, hidden_size=8), join_layer=join_layer, robust_join=robust_join)


def test_robust_training_draws_m_up_to_the_eval_join_and_evaluation_uses_the_eval_join():
    model = cross(3, robust_join=True)
    torch.manual_seed(0)
    drawn = {model.draw_join_layer(training=True) for _ in range(100)}
    assert drawn == {0, 1, 2, 3} and model.eval_join == 3
    assert model.draw_join_layer(training=False) == model.join_layer == 3


def test_without_robust_join_or_late_interaction_m_stays_put():
    fixed, full = cross(2), cross(0, robust_join=False)
    state = torch.random.get_rng_state()
    assert [fixed.draw_join_layer(training=t) for t in (True, False)] == [2, 2]
    assert [full.draw_join_layer(training=t) for t in (True, False)] == [0, 0]
    assert torch.equal(torch.random.get_rng_state(), state)  # nothing drawn: the RNG stream is untouched
