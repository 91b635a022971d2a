"""How each conv filter responds to perturbed probes: orientation, noise, attacks, counterfactuals, shape vs texture.

Every analysis takes the model (in eval mode, as `observe.untouched` leaves it), the chosen conv
layers as {name: module}, and a probe batch x (N, C, *spatial), and returns {layer name: {key:
numpy array}} with one row per filter (the layer's output channel).

One concern a module: `engine` pushes every perturbed copy (gratings, noisy copies, adversarial
copies, counterfactual edits, rotations, shifts, patch-shuffled and blurred copies) through the
model in shared passes; `sharing` splits those passes between processes; `stimuli` makes the
copies; `measures` are the statistics the copies are reduced to; `orientation`, `sequence`,
`robustness`, `counterfactual` and `shape_texture` are the analyses, each a plan and a finish
plus a function that runs it alone; `responses` runs the default set in the same passes. Only the
attacks' input gradients need passes of their own.

Nothing here writes .grad, leaves a hook, changes a weight or draws from the global RNG: noise
and patch shuffles come from local, seeded torch.Generators and input gradients from
torch.autograd.grad.

Angle convention (tuning, rotation): degrees in [0, 180), counter-clockwise from the image's
horizontal axis with x to the right and y up (towards row 0). An orientation is the direction the
stripes (iso-intensity lines) run along: 0° is horizontal stripes, i.e. a horizontal edge, which
a vertical intensity gradient (dI/drow) detects; 90° is vertical stripes.
"""
from tb_convviz.analysis.perturbation.counterfactual import counterfactual_sensitivity
from tb_convviz.analysis.perturbation.responses import perturbation_responses

__all__ = ["counterfactual_sensitivity", "perturbation_responses"]  # what the callback and collect run
