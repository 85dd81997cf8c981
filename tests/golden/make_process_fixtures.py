"""Writes the fixtures of the diffusion-process, sampler and optimizer tests:

  tests/golden/schedules.safetensors      beta schedules and derived tables, q_sample, p_sample, losses
  tests/golden/ddim_analytic.safetensors  DDIM timestep sequences and DDIM runs with an analytic noise model
  tests/golden/adam.safetensors           torch.optim.Adam / AdamW over 5 steps, clip_grad_norm_

Run: /usr/bin/python3 tests/golden/make_process_fixtures.py   (Debian's torch 1.13; no other dependency)

Everything is computed with torch.set_default_dtype(torch.float64), so the schedules' linspace and every table is
evaluated in double (reference.py's schedule functions use the default dtype). Integers (timesteps) are stored as
F64 (exact) so that the C++ tests read every tensor the same way. Tensors of rank > 4 are stored flattened to
(steps, elements). Layout (all F64 unless noted):

schedules.safetensors
  sched.<name>.<T>.<table>      name in linear/cosine/quadratic/sigmoid, T in 200/1000, table = every key of
                                reference.tables(betas): betas, alphas, alphas_cumprod, ..., posterior_mean_coef2
  q_sample.{x0,t,noise,out}     reference.q_sample on the linear T=200 tables, x0/noise (4, 2, 3, 3), t (4,)
  p_sample.{x,t,eps,noise}      one ancestral step with eps = 0.1 x + 0.001 t, per image t (4,)
  p_sample.out                  reference.p_sample (posterior variance, no clipping), image by image
  p_sample.out_beta             same mean, sqrt(beta_t) instead of sqrt(posterior_variance_t)
  p_sample.out_clip             posterior mean of the x0 prediction clipped to [-1, 1] + sqrt(posterior var) z
  loss.{pred,target}            (2, 3, 4, 4); some entries tie exactly, some differ by more than 1 (Huber branches)
  loss.<type>.{value,grad}      type in l1/l2/huber: F.<loss>(target, pred) as reference.p_losses calls it, and
                                its gradient with respect to pred; value has shape (1,)
  wloss.{t,pred,target}         t (6,), pred/target (6, 2, 3, 3): Min-SNR-gamma weighted losses, linear T = 1000
  wloss.<p>.g<gamma>.weights    p in eps/x0/v, gamma in 5/1: diffusers' --snr_gamma weights of t (min_snr_weights)
  wloss.<p>.g<gamma>.<type>.{value,grad}  mean over images of weight x F.<loss>(pred, target) averaged per image,
                                and its gradient with respect to pred

ddim_analytic.safetensors
  timesteps.<spacing>.<T>.<S>   reference.ddim_timesteps (ascending). Where numpy's float arange makes the
                                reference's trailing sequence one element too long (a leading -1, e.g. T=200,
                                S=29), the -1 is dropped and the case is listed in the metadata key
                                "trailing_reference_has_extra_minus_one".
  alphas_cumprod                linear schedule, T = 1000
  x_T                           (2, 3, 3, 3)
  ddim.<case>.timesteps         the sequence used
  ddim.<case>.trajectory        (S, 54): x after each of the S steps (the last row is x_0), model
                                eps(x, t) = 0.1 x + 0.001 t, each step reference.ddim_step
  ddim.<case>.params            [eta, clip_x0, S, spacing id (0 linspace, 1 leading, 2 trailing)]
  ddim.<case>.z                 (S, 54) the noise passed to each step (cases with eta > 0 only)

adam.safetensors
  adam.params0, adam.grads      initial parameters (48,) and the gradients of the 5 steps (5, 48), F64; the F32
                                runs start from their float32 roundings
  adam.<variant>.hparams        [lr, beta1, beta2, eps, weight_decay, decoupled (0 Adam, 1 AdamW)]
  adam.<variant>.<dtype>.params      (5, 48) parameters after each step of the run in dtype f32 or f64 (the
                                     f32 results are stored exactly, widened to F64)
  adam.<variant>.<dtype>.exp_avg     (48,) state after the 5 steps
  adam.<variant>.<dtype>.exp_avg_sq  (48,)
  clip.grads                    (30,) three gradient tensors (10, 7, 13) concatenated
  clip.<case>.max_norm          (1,)
  clip.<case>.<dtype>.grads_out (30,) after torch.nn.utils.clip_grad_norm_
  clip.<case>.<dtype>.total_norm (1,) its return value
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import reference as R  # noqa: E402
import safetensors_io  # noqa: E402

torch.set_default_dtype(torch.float64)

TABLE_NAMES = [
    "betas", "alphas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_recip_alphas", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2",
]


def analytic_eps(x, t):
    """The analytic 'model' shared with the C++ tests: eps(x, t) = 0.1 x + 0.001 t."""
    return 0.1 * x + 0.001 * t.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))


# ------------------------------------------------------------------------------------------------------------------
def make_schedules():
    out = {}
    for name, fn in R.SCHEDULES.items():
        for T in (200, 1000):
            betas = fn(T)
            assert betas.dtype == torch.float64, "schedules must be computed in float64"
            tabs = R.tables(betas)
            assert sorted(tabs) == sorted(TABLE_NAMES)
            for k, v in tabs.items():
                out[f"sched.{name}.{T}.{k}"] = v

    tabs = R.tables(R.linear_beta_schedule(200))
    g = torch.Generator().manual_seed(11)

    # q_sample
    x0 = torch.randn(4, 2, 3, 3, generator=g)
    noise = torch.randn(4, 2, 3, 3, generator=g)
    t = torch.tensor([0, 57, 123, 199], dtype=torch.long)
    out["q_sample.x0"] = x0
    out["q_sample.t"] = t.double()
    out["q_sample.noise"] = noise
    out["q_sample.out"] = R.q_sample(x0, t, tabs, noise=noise)

    # p_sample: one image at a time, since reference.p_sample takes one t_index for the whole batch
    x = 1.5 * torch.randn(4, 2, 3, 3, generator=g)
    z = torch.randn(4, 2, 3, 3, generator=g)
    t = torch.tensor([0, 1, 100, 199], dtype=torch.long)
    eps = analytic_eps(x, t)
    outs, outs_beta, outs_clip = [], [], []
    for n in range(4):
        tn = t[n : n + 1]
        xn, zn, en = x[n : n + 1], z[n : n + 1], eps[n : n + 1]
        outs.append(R.p_sample(lambda xx, tt: analytic_eps(xx, tt), xn, tn, int(tn), tabs, noise=zn))
        i = int(tn)
        mean = tabs["sqrt_recip_alphas"][i] * (xn - tabs["betas"][i] * en / tabs["sqrt_one_minus_alphas_cumprod"][i])
        outs_beta.append(mean + (torch.sqrt(tabs["betas"][i]) * zn if i > 0 else 0.0))
        x0 = ((xn - tabs["sqrt_one_minus_alphas_cumprod"][i] * en) / tabs["sqrt_alphas_cumprod"][i]).clamp(-1.0, 1.0)
        mean_c = tabs["posterior_mean_coef1"][i] * x0 + tabs["posterior_mean_coef2"][i] * xn
        outs_clip.append(mean_c + (torch.sqrt(tabs["posterior_variance"][i]) * zn if i > 0 else 0.0))
    out["p_sample.x"] = x
    out["p_sample.t"] = t.double()
    out["p_sample.eps"] = eps
    out["p_sample.noise"] = z
    out["p_sample.out"] = torch.cat(outs)
    out["p_sample.out_beta"] = torch.cat(outs_beta)
    out["p_sample.out_clip"] = torch.cat(outs_clip)
    # the clipped case must actually clip somewhere, and the beta case must differ from the posterior case
    x0_all = (x - tabs["sqrt_one_minus_alphas_cumprod"][t].reshape(-1, 1, 1, 1) * eps) / tabs[
        "sqrt_alphas_cumprod"][t].reshape(-1, 1, 1, 1)
    assert (x0_all.abs() > 1).any() and (x0_all.abs() < 1).any()

    # losses
    pred = torch.randn(2, 3, 4, 4, generator=g)
    target = pred + 0.7 * torch.randn(2, 3, 4, 4, generator=g)
    target[0, 0, 0, :] = pred[0, 0, 0, :]  # exact ties: L1 gradient 0 there, like PyTorch
    target[1, 2, 3, :] = pred[1, 2, 3, :] + torch.tensor([2.5, -3.0, 1.25, -1.5])  # Huber's linear branch
    out["loss.pred"] = pred
    out["loss.target"] = target
    for name, fn in (("l1", F.l1_loss), ("l2", F.mse_loss), ("huber", F.smooth_l1_loss)):
        p = pred.clone().requires_grad_(True)
        loss = fn(target, p)  # reference.p_losses: F.<loss>(noise, predicted_noise)
        loss.backward()
        out[f"loss.{name}.value"] = loss.detach().reshape(1)
        out[f"loss.{name}.grad"] = p.grad.detach().clone()
    make_weighted_losses(out)
    safetensors_io.save(os.path.join(HERE, "schedules.safetensors"), out,
                        {"generator": "make_process_fixtures.py", "dtype": "float64",
                         "p_sample_model": "eps = 0.1 x + 0.001 t", "q_sample_schedule": "linear T=200"})


def min_snr_weights(tabs, t, gamma, prediction):
    """Min-SNR-gamma weights as diffusers' examples/text_to_image/train_text_to_image.py computes them (--snr_gamma):
    snr = (sqrt(abar) / sqrt(1 - abar))^2 (training_utils.compute_snr), min(snr, gamma), divided by snr for
    epsilon and by snr + 1 for v prediction ("sample" prediction keeps min(snr, gamma), as the paper's x0 weight)."""
    ac = tabs["alphas_cumprod"][t]
    snr = (ac**0.5 / (1.0 - ac) ** 0.5) ** 2
    w = torch.stack([snr, gamma * torch.ones_like(snr)], dim=1).min(dim=1)[0]
    if prediction == "eps":
        w = w / snr
    elif prediction == "v":
        w = w / (snr + 1)
    return w


def make_weighted_losses(out):
    """wloss.*: the three losses with Min-SNR-gamma weights, diffusers' form: F.<loss>(pred, target,
    reduction="none") averaged per image, times the image's weight, averaged over the batch; linear T = 1000."""
    tabs = R.tables(R.linear_beta_schedule(1000))
    g = torch.Generator().manual_seed(12)
    # timesteps on both sides of SNR = 5 (t ~ 130) and SNR = 1 (t ~ 260), the ends included
    t = torch.tensor([0, 40, 129, 131, 300, 999], dtype=torch.long)
    pred = torch.randn(6, 2, 3, 3, generator=g)
    target = pred + 0.8 * torch.randn(6, 2, 3, 3, generator=g)
    target[2, 1, 0, :] = pred[2, 1, 0, :] + torch.tensor([2.5, -3.0, 0.0])  # Huber's linear branch and a tie
    out["wloss.t"] = t.double()
    out["wloss.pred"] = pred
    out["wloss.target"] = target
    losses = {"l1": F.l1_loss, "l2": F.mse_loss, "huber": F.smooth_l1_loss}
    for gamma in (5.0, 1.0):
        for prediction in ("eps", "x0", "v"):
            w = min_snr_weights(tabs, t, gamma, prediction)
            key = f"wloss.{prediction}.g{int(gamma)}"
            out[key + ".weights"] = w
            for name, fn in losses.items():
                p = pred.clone().requires_grad_(True)
                per_image = fn(p, target, reduction="none").mean(dim=[1, 2, 3])
                loss = (per_image * w).mean()
                loss.backward()
                out[f"{key}.{name}.value"] = loss.detach().reshape(1)
                out[f"{key}.{name}.grad"] = p.grad.detach().clone()


# ------------------------------------------------------------------------------------------------------------------
SPACING_ID = {"linspace": 0, "leading": 1, "trailing": 2}


def make_ddim():
    out = {}
    extra = []
    for spacing in ("linspace", "leading", "trailing"):
        for T, S in ((10, 1), (10, 3), (10, 10), (200, 29), (200, 50), (1000, 30), (1000, 50), (1000, 1000),
                     (1001, 7), (1000, 3)):
            ts = R.ddim_timesteps(T, S, spacing)
            # reference.ddim_timesteps keeps the first S entries of the trailing formula; record where numpy's
            # float arange made one more (a -1), as the C++ test documents that case
            if spacing == "trailing" and len(np.arange(T, 0, -T / S)) != S:
                assert len(np.arange(T, 0, -T / S)) == S + 1, (T, S)
                extra.append(f"{T}/{S}")
            assert len(ts) == S and int(ts[0]) >= 0 and int(ts[-1]) < T
            out[f"timesteps.{spacing}.{T}.{S}"] = ts.double()

    T = 1000
    tabs = R.tables(R.linear_beta_schedule(T))
    ac = tabs["alphas_cumprod"]
    out["alphas_cumprod"] = ac
    g = torch.Generator().manual_seed(22)
    x_T = torch.randn(2, 3, 3, 3, generator=g)
    out["x_T"] = x_T
    cases = {
        # name: (spacing, S, eta, clip)   S = 30 does not divide T = 1000
        "linspace": ("linspace", 30, 0.0, False),
        "leading": ("leading", 30, 0.0, False),
        "trailing": ("trailing", 30, 0.0, False),
        "linspace_clip": ("linspace", 30, 0.0, True),
        "trailing_clip": ("trailing", 30, 0.0, True),
        "linspace_eta1": ("linspace", 30, 1.0, False),
        "leading_eta05_clip": ("leading", 30, 0.5, True),
    }
    for name, (spacing, S, eta, clip) in cases.items():
        ts = [int(v) for v in R.ddim_timesteps(T, S, spacing)]
        assert len(ts) == S
        x = x_T.clone()
        traj, zs = [], []
        clipped_somewhere = False
        for i in reversed(range(S)):
            t = ts[i]
            ab_t = float(ac[t])
            ab_prev = float(ac[ts[i - 1]]) if i > 0 else 1.0
            eps = analytic_eps(x, torch.full((x.shape[0],), t, dtype=torch.long))
            x0 = (x - (1 - ab_t) ** 0.5 * eps) / ab_t**0.5
            clipped_somewhere |= bool((x0.abs() > 1).any())
            z = torch.randn(x.shape, generator=g) if eta != 0 else None
            if z is not None:
                zs.append(z.reshape(-1))
            x = R.ddim_step(x, eps, ab_t, ab_prev, eta=eta, clip_x0=clip, z=z)
            traj.append(x.reshape(-1))
        if clip:
            assert clipped_somewhere, name
        out[f"ddim.{name}.timesteps"] = torch.tensor(ts, dtype=torch.float64)
        out[f"ddim.{name}.trajectory"] = torch.stack(traj)
        out[f"ddim.{name}.params"] = torch.tensor([eta, float(clip), float(S), float(SPACING_ID[spacing])])
        if zs:
            out[f"ddim.{name}.z"] = torch.stack(zs)

    # the sequence sampler must agree with the step function it is built from
    seq = R.ddim_sample(lambda xx, tt: analytic_eps(xx, tt), x_T.clone(), R.ddim_timesteps(T, 30, "leading"), ac)
    assert torch.allclose(seq[-1].reshape(-1), out["ddim.leading.trajectory"][-1], rtol=0, atol=1e-12)
    safetensors_io.save(os.path.join(HERE, "ddim_analytic.safetensors"), out,
                        {"generator": "make_process_fixtures.py", "dtype": "float64", "schedule": "linear T=1000",
                         "model": "eps = 0.1 x + 0.001 t",
                         "trailing_reference_has_extra_minus_one": ",".join(extra)})


# ------------------------------------------------------------------------------------------------------------------
ADAM_VARIANTS = {
    # name: (lr, beta1, beta2, eps, weight_decay, decoupled)
    "adam": (0.05, 0.9, 0.999, 1e-8, 0.0, 0),
    "adam_wd": (0.05, 0.9, 0.999, 1e-8, 0.1, 0),
    "adam_custom": (0.02, 0.8, 0.95, 1e-3, 0.0, 0),
    "adamw": (0.05, 0.9, 0.999, 1e-8, 0.1, 1),
}


def make_adam():
    out = {}
    g = torch.Generator().manual_seed(33)
    params0 = torch.randn(48, generator=g)
    grads = torch.randn(5, 48, generator=g) * torch.linspace(0.01, 3.0, 48)  # a range of gradient scales
    out["adam.params0"] = params0
    out["adam.grads"] = grads
    for name, (lr, b1, b2, eps, wd, decoupled) in ADAM_VARIANTS.items():
        out[f"adam.{name}.hparams"] = torch.tensor([lr, b1, b2, eps, wd, float(decoupled)])
        for dname, dtype in (("f32", torch.float32), ("f64", torch.float64)):
            # two parameter tensors, as a model would have; the C++ optimizer sees them as one flat buffer
            p = params0.to(dtype).clone()
            views = [p[:30].reshape(6, 5).clone().requires_grad_(True), p[30:].clone().requires_grad_(True)]
            cls = torch.optim.AdamW if decoupled else torch.optim.Adam
            opt = cls(views, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, foreach=False)
            hist = []
            for k in range(5):
                gk = grads[k].to(dtype)
                views[0].grad = gk[:30].reshape(6, 5).clone()
                views[1].grad = gk[30:].clone()
                opt.step()
                hist.append(torch.cat([v.detach().reshape(-1) for v in views]))
            out[f"adam.{name}.{dname}.params"] = torch.stack(hist).double()
            st = [opt.state[v] for v in views]
            out[f"adam.{name}.{dname}.exp_avg"] = torch.cat([s["exp_avg"].reshape(-1) for s in st]).double()
            out[f"adam.{name}.{dname}.exp_avg_sq"] = torch.cat([s["exp_avg_sq"].reshape(-1) for s in st]).double()

    cgrads = torch.randn(30, generator=g)
    out["clip.grads"] = cgrads
    norm = float(cgrads.norm())
    for case, max_norm in (("clipped", 0.5 * norm), ("unclipped", 2.0 * norm)):
        out[f"clip.{case}.max_norm"] = torch.tensor([max_norm])
        for dname, dtype in (("f32", torch.float32), ("f64", torch.float64)):
            gg = cgrads.to(dtype)
            ps = [torch.zeros(10, dtype=dtype, requires_grad=True), torch.zeros(7, dtype=dtype, requires_grad=True),
                  torch.zeros(13, dtype=dtype, requires_grad=True)]
            ps[0].grad, ps[1].grad, ps[2].grad = gg[:10].clone(), gg[10:17].clone(), gg[17:].clone()
            total = torch.nn.utils.clip_grad_norm_(ps, max_norm)
            out[f"clip.{case}.{dname}.grads_out"] = torch.cat([p.grad for p in ps]).double()
            out[f"clip.{case}.{dname}.total_norm"] = total.reshape(1).double()
    safetensors_io.save(os.path.join(HERE, "adam.safetensors"), out,
                        {"generator": "make_process_fixtures.py", "torch": torch.__version__,
                         "implementation": "torch.optim single-tensor (foreach=False)"})


if __name__ == "__main__":
    make_schedules()
    make_ddim()
    make_adam()
    for f in ("schedules", "ddim_analytic", "adam"):
        path = os.path.join(HERE, f + ".safetensors")
        print(f"{path}: {os.path.getsize(path) / 1024:.0f} KB")
