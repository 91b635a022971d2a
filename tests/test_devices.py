"""The probe follows the model: another dtype here, another device where CUDA exists."""
import numpy as np
import pytest
import torch

from models import bn_cnn, probe_images
from tb_convviz import ConvViz, load


def test_double_precision_model_with_a_float_probe(tmp_path):
    model = bn_cnn().double()
    viz = ConvViz(tmp_path, probe=(probe_images(size=8), torch.tensor([0, 1, 2, 0])), impact=True)
    assert viz.log(model, 0)
    viz.close()
    logs = load(tmp_path)
    run = logs.runs()[0]
    np.testing.assert_allclose(logs.kernels(run, "0", 0), model[0].weight.detach().float().numpy(), atol=0.01)
    assert logs.impact(run, "4", 0)["d_accuracy"].shape == (8,)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_model_with_a_cpu_probe_is_logged_and_left_untouched(tmp_path):
    model = bn_cnn().cuda().train()
    cuda_rng = torch.cuda.get_rng_state()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    viz = ConvViz(tmp_path, probe=(probe_images(size=8), torch.tensor([0, 1, 2, 0])), impact=True)
    assert viz.log(model, 0)
    viz.close()
    assert torch.equal(cuda_rng, torch.cuda.get_rng_state())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert model.training
    logs = load(tmp_path)
    np.testing.assert_allclose(logs.kernels(logs.runs()[0], "0", 0), model[0].weight.detach().cpu().numpy(), atol=0.01)
