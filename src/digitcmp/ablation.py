"""The 2 x 2 ablation: does weight sharing help, does the auxiliary loss help?

The study's three models cannot separate the two effects (model 3 changes the branch structure
and the loss at once, and parameter counts differ). Here four arms differ in one factor each:

                      no aux loss    aux loss
    separate weights  separate       separate_aux
    shared weights    siamese        siamese_aux

and every arm sees the same pairs, batches and initialisation seed in a round, so effects are
measured as per-round (paired) differences. A sweep of the auxiliary-loss weight on the shared
arm comes with it; weights 0 and 1 are the arms siamese and siamese_aux themselves.
"""

from __future__ import annotations

import os
from pathlib import Path

from .config import ABLATION_AUX_WEIGHTS, Config, arm_name
from .files import atomic_write
from .stats import paired, split_stats
from .study import claims
from .tables import csv_text, missing

ARMS = {"separate": (False, False), "separate_aux": (False, True),
        "siamese": (True, False), "siamese_aux": (True, True)}  # arm -> (shared, aux)
SWEEP_MODEL = "siamese_aux"


def sweep_arm(weight: float) -> str:
    """The arm that trains the shared model with auxiliary-loss weight ``weight``."""
    return {0.0: "siamese", 1.0: "siamese_aux"}.get(float(weight)) or arm_name(SWEEP_MODEL,
                                                                             {"aux_weight": weight})


def ablation_config(config: Config, weights=ABLATION_AUX_WEIGHTS) -> Config:
    """``config`` with the four arms and the aux-weight sweep as its models."""
    extra = {sweep_arm(w): {"model": SWEEP_MODEL, "aux_weight": float(w)} for w in weights
             if sweep_arm(w) not in ARMS}
    config.models = list(ARMS) + list(extra)
    config.variants = extra
    return config


# Effect name -> (per-arm coefficients of the per-round contrast). Differences are in test error:
# negative means the factor lowers the error.
EFFECTS = {
    "weight sharing (main effect)": {"siamese": .5, "siamese_aux": .5, "separate": -.5, "separate_aux": -.5},
    "auxiliary loss (main effect)": {"separate_aux": .5, "siamese_aux": .5, "separate": -.5, "siamese": -.5},
    "interaction (aux effect with sharing - without)":
        {"siamese_aux": 1, "siamese": -1, "separate_aux": -1, "separate": 1},
    "sharing, without aux (siamese - separate)": {"siamese": 1, "separate": -1},
    "sharing, with aux (siamese_aux - separate_aux)": {"siamese_aux": 1, "separate_aux": -1},
    "aux, without sharing (separate_aux - separate)": {"separate_aux": 1, "separate": -1},
    "aux, with sharing (siamese_aux - siamese)": {"siamese_aux": 1, "siamese": -1},
}


def paired_errors(results: list[dict]) -> dict[int, dict[str, float]]:
    """round -> arm -> test error, for the rounds in which all four arms finished."""
    by_round: dict[int, dict[str, float]] = {}
    for r in results:
        if r["model"] in ARMS:
            by_round.setdefault(r["round"], {})[r["model"]] = r["test_error"]
    return {k: v for k, v in sorted(by_round.items()) if len(v) == len(ARMS)}


def is_ablation(results: list[dict]) -> bool:
    return bool(paired_errors(results))


def effects(results: list[dict]) -> list[dict]:
    """Each effect's per-round differences and paired statistics (fractions of pairs)."""
    rounds = paired_errors(results)
    rows = []
    for name, coef in EFFECTS.items():
        diffs = [sum(c * errs[arm] for arm, c in coef.items()) for errs in rounds.values()]
        rows.append({"effect": name, **paired(diffs), "rounds": list(rounds), "diffs": diffs})
    return rows


def sweep(results: list[dict], weights=None) -> list[dict]:
    """Mean and std of the shared arm's train and test error per auxiliary-loss weight."""
    by_weight: dict[float, list[dict]] = {}
    for r in results:
        if r.get("arch", r["model"]) in ("siamese", SWEEP_MODEL) and r.get("aux_weight") is not None:
            by_weight.setdefault(float(r["aux_weight"]), []).append(r)
    return [{"aux_weight": w, "arm": by_weight[w][0]["model"], "rounds": len(by_weight[w]),
             **split_stats(by_weight[w], ("test", "train"))}
            for w in sorted(by_weight if weights is None else [w for w in weights if w in by_weight])]


def _pp(x: float, signed: bool = False) -> str:
    return "–" if missing(x) else f"{100 * x:+.2f}" if signed else f"{100 * x:.2f}"


def _p(x: float) -> str:
    return "–" if missing(x) else f"{x:.3g}"


def effects_markdown(effect_rows: list[dict], sweep_rows: list[dict], params: dict[str, int]) -> str:
    """effects.md: the effects table, the arms and the sweep."""
    n = effect_rows[0]["n"] if effect_rows else 0
    claimed = claims()
    lines = [
        "| effect | mean difference (pp) | 95 % CI (paired t) | Wilcoxon p | t-test p | the study's claim |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for e in effect_rows:
        claim = f"{_pp(claimed[e['effect']]['difference'], True)}" if e["effect"] in claimed else ""
        lines.append(f"| {e['effect']} | {_pp(e['mean'], True)} | [{_pp(e['ci_low'], True)}, "
                     f"{_pp(e['ci_high'], True)}] | {_p(e['wilcoxon_p'])} | {_p(e['t_p'])} | {claim} |")
    lines += [
        "",
        f"Differences in test error, percentage points, over {n} paired rounds (each arm trained "
        "on the same pairs, batches and initialisation seed in a round). Negative: the factor "
        "lowers the error. Main effects average the two levels of the other factor; the "
        "interaction is the aux effect with sharing minus without.",
        "",
        "The study's claims come from comparing its three models, not from an ablation: \""
        + "\"; \"".join(c["quote"] for c in claimed.values()) + "\". Its Model 2 has no weight "
        "sharing between the digits (they are two channels of one convnet), so its 'weight "
        "sharing' step measures convolution; its Model 3 changes the architecture and the loss at "
        "once. The main effects here change one factor each.",
        "",
        "| arm | weight sharing | aux loss | parameters |",
        "|---|---|---|---:|",
    ]
    lines += [f"| `{arm}` | {'yes' if sh else 'no'} | {'yes' if aux else 'no'} | "
              f"{params.get(arm, 0):,} |" for arm, (sh, aux) in ARMS.items()]
    if sweep_rows:
        lines += ["", "Auxiliary-loss weight sweep, shared arm:", "",
                  "| aux weight | arm | rounds | test error (%) | train error (%) |",
                  "|---:|---|---:|---:|---:|"]
        lines += [f"| {s['aux_weight']:g} | `{s['arm']}` | {s['rounds']} | "
                  f"{_pp(s['test_error_mean'])} ± {_pp(s['test_error_std'])} | "
                  f"{_pp(s['train_error_mean'])} ± {_pp(s['train_error_std'])} |" for s in sweep_rows]
    return "\n".join(lines) + "\n"


def effects_csv(effect_rows: list[dict], sweep_rows: list[dict]) -> str:
    """effects.csv: one row per effect, then one per sweep weight; errors as fractions."""
    fields = ["kind", "name", "n", "mean", "ci_low", "ci_high", "wilcoxon_p", "t_p", "std"]
    rows = [{"kind": "effect", "name": e["effect"], **{k: e[k] for k in fields[2:-1]}}
            for e in effect_rows]
    rows += [{"kind": "aux_weight_sweep", "name": f"{s['aux_weight']:g}", "n": s["rounds"],
              "mean": s["test_error_mean"], "std": s["test_error_std"]} for s in sweep_rows]
    return csv_text(rows, fields)


def write_effects(run_dir: str | os.PathLike, results: list[dict]) -> tuple[list[dict], list[dict], str]:
    """Write effects.md and effects.csv; return the effect rows, the sweep rows and the markdown."""
    rows, sw = effects(results), sweep(results)
    params = {r["model"]: r["params"] for r in results if r["model"] in ARMS}
    md = effects_markdown(rows, sw, params)
    atomic_write(Path(run_dir) / "effects.md", "# Ablation: weight sharing x auxiliary loss\n\n" + md)
    atomic_write(Path(run_dir) / "effects.csv", effects_csv(rows, sw))
    return rows, sw, md
