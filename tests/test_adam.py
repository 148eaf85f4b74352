import subprocess
import sys

import pytest
import torch
from torch import nn

from digitcmp.adam import Adam


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(7, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))


def _train(cls, steps: int = 12, schedule: bool = False, unused: bool = False, **options) -> nn.Module:
    """``steps`` Adam steps of a small network on fixed random batches."""
    net = _net()
    extra = nn.Linear(2, 2) if unused else None  # a parameter that never gets a gradient
    params = list(net.parameters()) + (list(extra.parameters()) if unused else [])
    opt = cls(params, lr=1e-2, **options)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-2, total_steps=steps) if schedule else None
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(16, 7, generator=g), torch.randint(0, 3, (16,), generator=g)
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        if sched is not None:  # changes the learning rate and beta1 at every step
            sched.step()
    return net


def _same(a: nn.Module, b: nn.Module) -> bool:
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    return all(torch.equal(p, q) for p, q in pairs)


@pytest.mark.parametrize("options", [{"fused": True}, {"fused": True, "weight_decay": 1e-3},
                                     {"fused": None}, {"fused": True, "amsgrad": True}])
def test_steps_as_torch_adam_to_the_bit(options):
    assert _same(_train(Adam, **options), _train(torch.optim.Adam, **options))


def test_follows_a_scheduler_to_the_bit():
    assert _same(_train(Adam, schedule=True, fused=True), _train(torch.optim.Adam, schedule=True, fused=True))


def test_a_parameter_without_gradient_is_left_alone_as_by_torch_adam():
    assert _same(_train(Adam, unused=True, fused=True), _train(torch.optim.Adam, unused=True, fused=True))


def test_the_short_path_steps_adams_own_state():
    net = _net()
    opt = Adam(net.parameters(), lr=1e-2, fused=True)
    x = torch.randn(8, 7)
    for _ in range(2):
        opt.zero_grad()
        net(x).sum().backward()
        opt.step()
    assert opt._lists is not None  # the state tensors the short path steps, made by it
    assert opt._lists[3][0] is opt.state[next(net.parameters())]["step"]
    assert float(opt._lists[3][0]) == 2


@pytest.mark.parametrize("size", [20, 2, 64, (5, 7)])
def test_slots_step_as_each_would_alone(size):
    """per_slot: a parameter stacking 3 slots along its first dimension, each slot's values
    after many steps equal to the bit those of the slot stepped alone (a slot of 20 or 2 values
    falls partly in the kernel's vector loop and partly in its scalar tail when stacked)."""
    size = size if isinstance(size, tuple) else (size,)
    g = torch.Generator().manual_seed(0)
    start = torch.randn(3, *size, generator=g)
    grads = [torch.randn(3, *size, generator=g) * 1e-2 for _ in range(300)]
    stacked = nn.Parameter(start.clone())
    alone = [nn.Parameter(start[s:s + 1].clone()) for s in range(3)]
    opts = [Adam([stacked], lr=1e-2, weight_decay=1e-3, fused=True, per_slot=True)]
    opts += [torch.optim.Adam([p], lr=1e-2, weight_decay=1e-3, fused=True) for p in alone]
    for grad in grads:
        stacked.grad = grad.clone()
        for s, p in enumerate(alone):
            p.grad = grad[s:s + 1].clone()
        for opt in opts:
            opt.step()
    assert all(torch.equal(stacked.data[s:s + 1], alone[s].data) for s in range(3))


def _resumed(cls) -> nn.Module:
    """A network stepped on after its state and its optimiser's were loaded from another's."""
    a, b = _net(0), _net(1)
    opt_a, opt_b = cls(a.parameters(), lr=1e-2, fused=True), cls(b.parameters(), lr=1e-2, fused=True)
    x = torch.randn(8, 7, generator=torch.Generator().manual_seed(3))
    for net, opt in ((a, opt_a), (b, opt_b)):
        for _ in range(3):
            opt.zero_grad()
            net(x).sum().backward()
            opt.step()
    opt_b.load_state_dict(opt_a.state_dict())
    b.load_state_dict(a.state_dict())
    for _ in range(2):
        opt_b.zero_grad()
        b(x).sum().backward()
        opt_b.step()
    assert float(opt_b.state[next(b.parameters())]["step"]) == 5
    return b


def test_loading_a_state_steps_from_the_loaded_state():
    assert _same(_resumed(Adam), _resumed(torch.optim.Adam))


def test_fused_steps_do_not_import_dynamo():
    # torch.optim's guards import torch._dynamo on first use (about a second per worker).
    code = ("import sys, torch\n"
            "from digitcmp.adam import Adam\n"
            "net = torch.nn.Linear(3, 2)\n"
            "opt = Adam(net.parameters(), lr=1e-2, fused=True)\n"
            "sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-2, total_steps=2)\n"
            "for _ in range(2):\n"
            "    opt.zero_grad()\n"
            "    net(torch.ones(4, 3)).sum().backward()\n"
            "    opt.step()\n"
            "    sched.step()\n"
            "assert 'torch._dynamo' not in sys.modules, 'imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad_does_what_torch_adams_does(set_to_none):
    grads = []
    for cls in (Adam, torch.optim.Adam):
        net = _net()
        opt = cls(net.parameters(), lr=1e-2, fused=True)
        net(torch.randn(4, 7)).sum().backward()
        opt.zero_grad(set_to_none=set_to_none)
        grads.append([p.grad for p in net.parameters()])
    for a, b in zip(*grads, strict=True):
        assert (a is None and b is None) if set_to_none else torch.equal(a, b) and not a.any()
