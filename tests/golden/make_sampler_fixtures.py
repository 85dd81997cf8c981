"""Writes tests/golden/samplers_analytic.safetensors: runs of every sampler of the unified sampler family (beyond
DDPM and DDIM, whose fixtures make_process_fixtures.py writes) with an analytic model, from sampler_reference.py's
transcriptions of k-diffusion, DPM-Solver, diffusers' UniPC and score_sde, plus the Karras timestep sequences.

Run: /usr/bin/python3 tests/golden/make_sampler_fixtures.py   (Debian's torch 1.13; deterministic, ~1 s)

Everything in float64. The model is eps(x, t) = 0.1 x + 0.001 t (x: the variance-preserving x_t, t: the integer
timestep), the one of the DDIM fixtures. Layout (all F64; timesteps stored as exact F64 integers):

  x_T                          (2, 1, 3, 3), the start of every case (variance-preserving, at the first timestep)
  <case>.timesteps             (N,) ascending; visited in descending order, then the clean end
  <case>.trajectory            (N, 18): x after each of the N steps (variance-preserving scale; the last row is x_0)
  <case>.noise                 (K, 18): the standard normals the sampler consumes, in the order it draws them
                               (stochastic cases only)
  metadata "<case>"            JSON {"sampler", "schedule", "T", "steps", "spacing", "clip" (bool), "eta", "snr",
                               "corrector_steps", "source"}
  karras.<schedule>.<T>.<N>    (N,) sampler_reference.karras_timesteps (ascending)
  karras_sigmas.linear.1000.10 (10,) get_sigmas_karras(10, sigma_min, sigma_max) without the appended 0
  sigma_to_t.sigma, sigma_to_t.t   DiscreteSchedule(quantize=False).sigma_to_t on the linear T = 1000 table,
                                   for sigmas inside and outside [sigma_min, sigma_max]

Checks made while writing (the script stops on failure): k-diffusion's DPM-Solver++(2M) equals the official
DPM-Solver formula (VP form) to 1e-12; Euler equals DDIM (eta = 0, reference.ddim_step) to 1e-12; the clipped
cases clip somewhere; some Karras sequence had a collision to resolve.
"""
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import reference as R  # noqa: E402
import safetensors_io  # noqa: E402
import sampler_reference as S  # noqa: E402

torch.set_default_dtype(torch.float64)


def analytic_eps(x, t):
    return 0.1 * x + 0.001 * t.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))


def clipped_eps(x, t, ac, clip):
    """The analytic eps, re-derived from the x0 prediction clipped to [-1, 1] when clip (the C++ ClipX0::RederiveEps;
    UniPC reads only x0, so this is diffusers' thresholding replaced by clipping)."""
    eps = analytic_eps(x, t)
    if not clip:
        return eps
    ab = ac[t].reshape(-1, *([1] * (x.dim() - 1)))
    x0 = ((x - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1.0, 1.0)
    return (x - ab.sqrt() * x0) / (1 - ab).sqrt()


def timesteps_for(ac, steps, spacing):
    if spacing == "karras":
        return S.karras_timesteps(ac, steps)
    if spacing == "all":
        return torch.arange(ac.shape[0])
    return R.ddim_timesteps(ac.shape[0], steps, spacing)


# name: (sampler, schedule, T, steps, spacing, clip, eta, snr, corrector_steps)
CASES = {
    "euler_linspace": ("euler", "linear", 1000, 10, "linspace", False, 0.0, 0.0, 0),
    "euler_karras": ("euler", "linear", 1000, 10, "karras", False, 0.0, 0.0, 0),
    "heun_karras": ("heun", "linear", 1000, 8, "karras", False, 0.0, 0.0, 0),
    "heun_trailing_clip": ("heun", "linear", 200, 6, "trailing", True, 0.0, 0.0, 0),
    "euler_ancestral_karras": ("euler_ancestral", "linear", 1000, 10, "karras", False, 1.0, 0.0, 0),
    "euler_ancestral_linspace_eta05": ("euler_ancestral", "linear", 1000, 8, "linspace", False, 0.5, 0.0, 0),
    "dpmpp_2m_linspace": ("dpmpp_2m", "linear", 1000, 10, "linspace", False, 0.0, 0.0, 0),
    "dpmpp_2m_karras_clip": ("dpmpp_2m", "linear", 1000, 12, "karras", True, 0.0, 0.0, 0),
    "dpmpp_2m_sde_karras": ("dpmpp_2m_sde", "linear", 1000, 10, "karras", False, 1.0, 0.0, 0),
    "dpmpp_2m_sde_trailing_eta07_clip": ("dpmpp_2m_sde", "cosine", 200, 8, "trailing", True, 0.7, 0.0, 0),
    "uni_pc_karras": ("uni_pc", "linear", 1000, 10, "karras", False, 0.0, 0.0, 0),
    "uni_pc_linspace_clip": ("uni_pc", "linear", 200, 8, "linspace", True, 0.0, 0.0, 0),
    "reverse_diffusion_linspace": ("reverse_diffusion", "linear", 1000, 10, "linspace", False, 0.0, 0.0, 0),
    "reverse_diffusion_all": ("reverse_diffusion", "cosine", 20, 20, "all", False, 0.0, 0.0, 0),
    "euler_maruyama_linspace": ("euler_maruyama", "linear", 1000, 10, "linspace", False, 0.0, 0.0, 0),
    "euler_maruyama_all_clip": ("euler_maruyama", "cosine", 20, 20, "all", True, 0.0, 0.0, 0),
    "pc_linspace": ("pc", "linear", 1000, 6, "linspace", False, 0.0, 0.16, 1),
    "pc_leading_two_corrector_steps_clip": ("pc", "linear", 1000, 5, "leading", True, 0.0, 0.2, 2),
}


def noise_count(sampler, sigmas, eta, corrector_steps):
    n = len(sigmas) - 1
    if sampler in ("euler", "heun", "dpmpp_2m", "uni_pc"):
        return 0
    if sampler in ("euler_ancestral", "dpmpp_2m_sde"):
        return n - 1 if eta > 0 else 0  # every step but the last (sigma' = 0)
    if sampler == "pc":
        return n * corrector_steps + n - 1
    return n - 1  # reverse_diffusion, euler_maruyama


def run_case(sampler, ac, betas, ts, x_T, clip, eta, snr, corrector_steps, noise):
    sigmas = S.plan_sigmas(ac, ts)
    den = S.DiscreteEpsDDPMDenoiser(analytic_eps, ac, quantize=True, clip_x0=clip)
    x_ve = x_T * (1 + float(sigmas[0]) ** 2) ** 0.5  # the VP x_T at sigmas[0] in k-diffusion's scale
    if sampler == "euler":
        return S.sample_euler(den, x_ve, sigmas)
    if sampler == "heun":
        return S.sample_heun(den, x_ve, sigmas)
    if sampler == "euler_ancestral":
        return S.sample_euler_ancestral(den, x_ve, sigmas, noise, eta=eta)
    if sampler == "dpmpp_2m":
        return S.sample_dpmpp_2m(den, x_ve, sigmas)
    if sampler == "dpmpp_2m_sde":
        return S.sample_dpmpp_2m_sde(den, x_ve, sigmas, noise, eta=eta)
    if sampler == "uni_pc":
        return S.sample_unipc(lambda x, t: clipped_eps(x, t, ac, clip), ac, x_T, ts)
    sde = S.DiscreteVPSDE(betas)
    return S.score_sampler(sampler, analytic_eps, sde, x_T, ts, noise, snr=snr, n_steps=corrector_steps, clip_x0=clip)


def main():
    g = torch.Generator().manual_seed(14)
    out = {}
    meta = {"generator": "make_sampler_fixtures.py", "dtype": "float64", "model": "eps = 0.1 x + 0.001 t"}
    x_T = torch.randn(2, 1, 3, 3, generator=g)
    out["x_T"] = x_T
    for name, (sampler, schedule, T, steps, spacing, clip, eta, snr, corr) in CASES.items():
        betas = R.SCHEDULES[schedule](T)
        ac = R.tables(betas)["alphas_cumprod"]
        ts = timesteps_for(ac, steps, spacing)
        assert len(ts) == steps
        sigmas = S.plan_sigmas(ac, ts)
        noise = [torch.randn(x_T.shape, generator=g) for _ in range(noise_count(sampler, sigmas, eta, corr))]
        traj = run_case(sampler, ac, betas, ts, x_T, clip, eta, snr, corr, noise)
        assert len(traj) == steps
        if clip:  # the unclipped run must differ: some x0 prediction left [-1, 1]
            plain = run_case(sampler, ac, betas, ts, x_T, False, eta, snr, corr, noise)
            assert (plain[-1] - traj[-1]).abs().max() > 1e-3, name
        out[f"{name}.timesteps"] = ts.double()
        out[f"{name}.trajectory"] = torch.stack([x.reshape(-1) for x in traj])
        if noise:
            out[f"{name}.noise"] = torch.stack([z.reshape(-1) for z in noise])
        source = {
            "euler": "k-diffusion sample_euler", "heun": "k-diffusion sample_heun",
            "euler_ancestral": "k-diffusion sample_euler_ancestral", "dpmpp_2m": "k-diffusion sample_dpmpp_2m",
            "dpmpp_2m_sde": "k-diffusion sample_dpmpp_2m_sde (midpoint)",
            "uni_pc": "diffusers UniPCMultistepScheduler (bh2, order 2)",
            "reverse_diffusion": "score_sde ReverseDiffusionPredictor",
            "euler_maruyama": "score_sde EulerMaruyamaPredictor",
            "pc": "score_sde LangevinCorrector + ReverseDiffusionPredictor",
        }[sampler]
        meta[name] = json.dumps({"sampler": sampler, "schedule": schedule, "T": T, "steps": steps, "spacing": spacing,
                                 "clip": clip, "eta": eta, "snr": snr, "corrector_steps": corr, "source": source})

        # independent cross-checks
        if sampler == "dpmpp_2m" and not clip:
            official = S.dpm_solver_pp_2m_official(
                lambda x, t: (x - (1 - ac[t[0]]) ** 0.5 * analytic_eps(x, t)) / ac[t[0]] ** 0.5, x_T, ac, ts)
            for a, b in zip(traj, official):
                assert (a - b).abs().max() < 1e-12, (name, (a - b).abs().max())
        if sampler == "euler":
            x = x_T
            for i in reversed(range(len(ts))):
                t = int(ts[i])
                ab_prev = float(ac[int(ts[i - 1])]) if i > 0 else 1.0
                x = R.ddim_step(x, analytic_eps(x, torch.full((2,), t)), float(ac[t]), ab_prev)
                assert (x - traj[len(ts) - 1 - i]).abs().max() < 1e-12, name

    collisions = 0
    for schedule, T, Ns in (("linear", 1000, (1, 2, 5, 10, 25, 50, 100, 250)), ("cosine", 1000, (10, 50)),
                            ("linear", 200, (10, 50, 120, 200)), ("quadratic", 30, (7, 30))):
        ac = R.tables(R.SCHEDULES[schedule](T))["alphas_cumprod"]
        for N in Ns:
            ts = S.karras_timesteps(ac, N)
            ds = S.DiscreteSchedule(((1 - ac) / ac) ** 0.5, quantize=False)
            raw = ds.sigma_to_t(S.get_sigmas_karras(N, float(ds.sigma_min), float(ds.sigma_max))[:-1]).numpy()
            collisions += int(len(set(round(v) for v in raw)) < N)
            out[f"karras.{schedule}.{T}.{N}"] = ts.double()
    assert collisions > 0
    ac = R.tables(R.linear_beta_schedule(1000))["alphas_cumprod"]
    ds = S.DiscreteSchedule(((1 - ac) / ac) ** 0.5, quantize=False)
    out["karras_sigmas.linear.1000.10"] = S.get_sigmas_karras(10, float(ds.sigma_min), float(ds.sigma_max))[:-1]
    sig = torch.cat([torch.exp(torch.linspace(-6.0, 6.0, 23)), ds.sigmas[torch.tensor([0, 1, 2, 500, 998, 999])]])
    out["sigma_to_t.sigma"] = sig
    out["sigma_to_t.t"] = ds.sigma_to_t(sig)

    path = os.path.join(HERE, "samplers_analytic.safetensors")
    safetensors_io.save(path, out, meta)
    print(f"{path}: {os.path.getsize(path) / 1024:.0f} KB, {len(CASES)} sampler cases")


if __name__ == "__main__":
    main()
