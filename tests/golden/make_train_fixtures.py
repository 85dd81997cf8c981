"""Writes train_step.safetensors: one training step of the reference U-Net (Algorithm 1 with the primer's p_losses and
torch.optim.Adam) on a fixed batch with fixed timesteps and noise, for every prediction target (eps, x0, v) and loss
(l2, l1, huber), with gradient clipping and the EMA. The C++ test (tests/train/test_trainer_golden.cpp) runs
Trainer::step(x0, t, noise) on the same inputs and compares the loss, every parameter gradient, the updated weights
and the EMA.

Run: /usr/bin/python3 tests/golden/make_train_fixtures.py     (deterministic: rewrites a byte-identical file)

The network: reference.Unet(dim=4, channels=1, dim_mults=(1,), use_convnext=False, resnet_block_groups=2) with one
attention head of width 2 (attention_heads / attention_dim_head, the C++ UnetConfig's extensions; a single level
keeps the fixture small: 2325 parameters), float32 default init under torch.manual_seed(3001) and random GroupNorm
affine parameters as in make_unet_fixtures.py. The schedule: linear, T = 50. The batch: x0 (4, 1, 8, 8) uniform in
[-1, 1], t = [0, 13, 31, 49], noise ~ N(0, 1), drawn in float32 after the weights, in that order. Every step is
evaluated in float64 from these float32 values (model.double(), default dtype float64) and stored rounded to F32.

One step of case (prediction p, loss L, clip c, EMA e), from the same initial weights and a fresh Adam (lr 1e-3,
betas 0.9 / 0.999, eps 1e-8):
  x_t = q_sample(x0, t, noise); out = model(x_t, t); loss = p_losses(..., loss_type=L, prediction=p)
  target: eps -> noise, x0 -> x0, v -> sqrt(abar_t) noise - sqrt(1 - abar_t) x0
  backward; grad_norm = ||all gradients||; c > 0: clip_grad_norm_(parameters, c); Adam step
  EMA (the C++ Trainer's default: decay 0.995 with warm-up, so the first update uses d = min(0.995, 1/10) = 0.1):
  shadow = d w0 + (1 - d) w1

Tensors (parameters flattened in the order of metadata "parameters", a JSON list of [name, shape]):
  weights             (P,) the initial weights w0
  x0, noise           (4, 1, 8, 8);  t (4,) I64
  <case>.loss, <case>.grad_norm   (1,) F64
  <case>.dout         (4, 1, 8, 8) d loss / d out (every case)
  <case>.grads        (P,) the gradients before clipping          } the "full" cases eps_l2, x0_l1, v_huber
  <case>.update       (P,) w1 - w0 after the Adam step            }
  <case>.ema_update   (P,) shadow - w0                             eps_l2 (EMA on) only
Metadata: "diffusion.unet" (the reference kwargs, resolved), "diffusion.unet.extensions" (heads), "schedule"
("linear"), "timesteps" (50), "cases" (JSON: name -> {prediction, loss, grad_clip, ema, full}), "adam" (JSON).
The six other (prediction, loss) pairs store the loss, grad_norm and dout only: their gradients are the backward of
the (golden-tested) network from that dout, which the C++ test computes in double.
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import reference as R  # noqa: E402
import safetensors_io  # noqa: E402

SEED = 3001
KWARGS = dict(dim=4, channels=1, dim_mults=(1,), use_convnext=False, resnet_block_groups=2)
EXTENSIONS = dict(level_attention=["linear"], mid_attention="full", attention_heads=1, attention_dim_head=2)
T = 50
TIMESTEPS = [0, 13, 31, 49]
ADAM = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
EMA_DECAY = 0.995


class Float64Default:
    def __enter__(self):
        torch.set_default_dtype(torch.float64)

    def __exit__(self, *exc):
        torch.set_default_dtype(torch.float32)


def randomize_group_norms(module):
    for m in module.modules():
        if isinstance(m, nn.GroupNorm) and m.affine:
            with torch.no_grad():
                m.weight.copy_(1.0 + 0.5 * torch.randn_like(m.weight))
                m.bias.copy_(0.5 * torch.randn_like(m.bias))


def flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def cases():
    """name -> (prediction, loss, clip rule, ema, full). Clip rules: None (off), ("below", f): max_norm = f x the
    gradient norm (so clipping scales the gradients), ("above", f): max_norm = f x the norm (clipping on, no effect)."""
    out = {}
    full = {("eps", "l2"): (None, True), ("x0", "l1"): (("below", 0.5), False), ("v", "huber"): (("above", 2.0), True)}
    for p in ("eps", "x0", "v"):
        for loss in ("l2", "l1", "huber"):
            clip, ema = full.get((p, loss), (None, True))
            out[f"{p}_{loss}"] = (p, loss, clip, ema, (p, loss) in full)
    return out


def main():
    torch.manual_seed(SEED)
    model = R.Unet(**KWARGS, **EXTENSIONS)
    randomize_group_norms(model)
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    noise = torch.randn(4, 1, 8, 8)
    t = torch.tensor(TIMESTEPS, dtype=torch.int64)
    names = [n for n, _ in model.named_parameters()]
    w0 = {n: p.detach().clone() for n, p in model.named_parameters()}  # float32

    with Float64Default():
        tabs = R.tables(R.SCHEDULES["linear"](T))
    assert tabs["alphas_cumprod"].dtype == torch.float64

    out = {"weights": flat([w0[n] for n in names]), "x0": x0, "noise": noise, "t": t}
    case_meta = {}
    for name, (prediction, loss_type, clip, ema, full) in cases().items():
        m = R.Unet(**KWARGS, **EXTENSIONS).double()
        m.load_state_dict({n: v.double() for n, v in w0.items()})
        with Float64Default():
            x_noisy = R.q_sample(x0.double(), t, tabs, noise.double())
            prediction_out = m(x_noisy, t)
            prediction_out.retain_grad()
            target = R.training_target(prediction, x0.double(), t, tabs, noise.double())
            loss = R.regression_loss(loss_type, prediction_out, target)
            # the same computation as reference.p_losses (which does not hand back the model output)
            ref = R.p_losses(m, x0.double(), t, tabs, noise=noise.double(), loss_type=loss_type, prediction=prediction)
            assert torch.equal(ref, loss), (ref, loss)
        loss.backward()
        grads = flat([p.grad for p in m.parameters()])
        grad_norm = float(grads.norm())
        max_norm = 0.0
        if clip is not None:
            rule, factor = clip
            max_norm = factor * grad_norm
            total = float(torch.nn.utils.clip_grad_norm_(m.parameters(), max_norm))
            assert abs(total - grad_norm) <= 1e-12 * grad_norm
            clipped = flat([p.grad for p in m.parameters()]).norm()
            assert (clipped < 0.51 * grad_norm) if rule == "below" else torch.equal(clipped, grads.norm())
        opt = torch.optim.Adam(m.parameters(), **ADAM)
        opt.step()
        w1 = flat([p.detach() for p in m.parameters()])
        update = w1 - out["weights"].double()
        out[f"{name}.loss"] = torch.tensor([float(loss)], dtype=torch.float64)
        out[f"{name}.grad_norm"] = torch.tensor([grad_norm], dtype=torch.float64)
        out[f"{name}.dout"] = prediction_out.grad.float()
        if full:
            out[f"{name}.grads"] = grads.float()
            out[f"{name}.update"] = update.float()
            if ema and name == "eps_l2":
                d = min(EMA_DECAY, (1.0 + 0) / (10.0 + 0))
                shadow = d * out["weights"].double() + (1 - d) * w1
                out[f"{name}.ema_update"] = (shadow - out["weights"].double()).float()
        case_meta[name] = dict(prediction=prediction, loss=loss_type, grad_clip=max_norm, ema=ema, full=full)
        print(f"{name}: loss {float(loss):.6f}, grad norm {grad_norm:.6f}, max_norm {max_norm:.6f}")

    meta = {
        "diffusion.unet": json.dumps(R.unet_config(**KWARGS)),
        "diffusion.unet.extensions": json.dumps(EXTENSIONS),
        "parameters": json.dumps([[n, list(w0[n].shape)] for n in names]),
        "schedule": "linear",
        "timesteps": str(T),
        "cases": json.dumps(case_meta),
        "adam": json.dumps(ADAM),
        "ema_decay": str(EMA_DECAY),
    }
    path = os.path.join(HERE, "train_step.safetensors")
    safetensors_io.save(path, out, meta)
    n_params = out["weights"].numel()
    print(f"train_step: {n_params} parameters in {len(names)} tensors, {len(case_meta)} cases, "
          f"{os.path.getsize(path)} B")


if __name__ == "__main__":
    main()
